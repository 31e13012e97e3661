"""One connection to the cluster, with its errors turned into one-line messages and every write guarded.

Responses are read as plain JSON (`_preload_content=False`): the client's model classes cost more CPU
than the requests themselves on hundreds of Jobs, and CNPG objects are dicts anyway.

The kubeconfig is checked before the client reads it: the client turns a binary file, a YAML list or
scalar, or `certificate-authority-data` that is not base64 into a TypeError or binascii.Error deep in
its loader. Here each is one line naming the file and the entry, and no value from the file (a token,
a key) is ever part of the message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from immich_tui.services.errors import ServiceError

PAGE = 500  # items per list request; every list is paginated
TIMEOUT = (5.0, 30.0)  # connect, read: per request, and each request is tried once (see `_connect`)
MAX_KUBECONFIG = 16 * 1024 * 1024  # kubeconfigs with many clusters and embedded certificates are a few KiB
# The entries whose `*-data` fields the client base64-decodes (into temporary files) as it loads them.
_BASE64_FIELDS = {
    "clusters": ("cluster", ("certificate-authority-data",)),
    "users": ("user", ("client-certificate-data", "client-key-data")),
    "contexts": ("context", ()),
}


class ClusterError(ServiceError):
    """Anything that stops a cluster call; the message is the one line shown to the operator."""


class Unreachable(ClusterError):
    pass


class Forbidden(ClusterError):
    pass


class NotFound(ClusterError):
    pass


class ReadOnly(ClusterError):
    pass


@dataclass(frozen=True)
class Access:
    """A verb on a resource, as RBAC and SelfSubjectAccessReview name it."""

    verb: str
    resource: str
    namespace: str
    group: str = ""
    subresource: str = ""
    name: str = ""

    def __str__(self) -> str:
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        qualified = f"{what}.{self.group}" if self.group else what
        return f"{self.verb} {qualified} in namespace {self.namespace}"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "text" if isinstance(value, str) else type(value).__name__


def check_kubeconfig(path: str) -> None:
    """A ClusterError naming the file (and the entry) when `path` cannot be a kubeconfig the client loads.

    Checked: size (at most MAX_KUBECONFIG, read no further), UTF-8, YAML, a mapping at the top, `clusters`,
    `users` and `contexts` lists of named mappings, and base64 in every `*-data` field the client decodes.
    The rest (a context naming a missing cluster, no current context) is left to the client's own messages."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KUBECONFIG + 1)
    except OSError as exc:
        raise ClusterError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KUBECONFIG:
        raise ClusterError(f"kubeconfig {path} is larger than {MAX_KUBECONFIG:,} bytes: not a kubeconfig")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClusterError(f"kubeconfig {path} is not UTF-8 text (byte {exc.start + 1}): not a kubeconfig") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ClusterError(
            f"kubeconfig {path} is not YAML{where}: {getattr(exc, 'problem', None) or type(exc).__name__}"
        ) from None
    if loaded is None:
        return  # empty: the client says so in its own words
    if not isinstance(loaded, dict):
        raise ClusterError(
            f"kubeconfig {path} is {_kind(loaded)} in YAML, not a kubeconfig (a mapping with clusters, users "
            "and contexts)"
        )
    current = loaded.get("current-context")
    if current is not None and not isinstance(current, str):
        raise ClusterError(f"kubeconfig {path}: current-context is {_kind(current)}, not a name")
    for section, (inner, encoded) in _BASE64_FIELDS.items():
        entries = loaded.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise ClusterError(f"kubeconfig {path}: {section} is {_kind(entries)}, not a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ClusterError(f"kubeconfig {path}: {section}[{i}] is not a mapping with a name")
            where = f"{section}[{i}] ({entry['name'][:60]!r})"
            body = entry.get(inner)
            if body is None:
                continue
            if not isinstance(body, dict):
                raise ClusterError(f"kubeconfig {path}: {where} {inner} is {_kind(body)}, not a mapping")
            for field in encoded:
                value = body.get(field)
                if value is None:
                    continue
                try:
                    if not isinstance(value, str):
                        raise ValueError(value)
                    base64.standard_b64decode(value)
                except (binascii.Error, ValueError):
                    raise ClusterError(f"kubeconfig {path}: {where} {inner}.{field} is not base64") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason or "").strip()
    except (ValueError, TypeError):
        return str(exc.reason or "").strip()


def kubeconfig_path(kubeconfig: str | None) -> str:
    """The file the client reads: `--kubeconfig`, else the first of KUBECONFIG, else ~/.kube/config."""
    return kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube/config")


def context_name(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The context a `Kube` for these arguments talks to, from the kubeconfig alone, or "" when it cannot tell.

    It runs no credential plugin and makes no request, so a header can name the cluster before the first
    request answers, or when it never does."""
    if context:
        return context
    path = kubeconfig_path(kubeconfig)
    if not Path(path).is_file():  # `Kube` falls back to the service account only without --kubeconfig
        return "in-cluster" if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST") else ""
    try:
        check_kubeconfig(path)
        _, active = config.list_kube_config_contexts(config_file=path)
    except (ClusterError, ConfigException, ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError):
        return ""
    name = (active or {}).get("name", "") if isinstance(active, dict) else ""
    return name if isinstance(name, str) else ""


class Kube:
    """The operator's cluster access: kubeconfig (with `--context`) or the in-cluster service account.

    Every request is tried once, within `timeout` (connect, read): an operator waiting on a screen is
    better served by "cannot reach the cluster" after one timeout than by the client's retries
    multiplying it, and every view is read again on the next poll anyway."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, *, read_only: bool = False) -> None:
        self.read_only = read_only
        self.context = context or ""
        self.server = ""
        self.timeout: tuple[float, float] = TIMEOUT
        self.api = self._connect(kubeconfig, context)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.auth = client.AuthorizationV1Api(self.api)

    def _connect(self, kubeconfig: str | None, context: str | None) -> client.ApiClient:
        path = kubeconfig_path(kubeconfig)
        if kubeconfig and not Path(kubeconfig).is_file():
            what = "is not a regular file" if Path(kubeconfig).exists() else "does not exist"
            raise ClusterError(f"kubeconfig {kubeconfig} {what}")
        if Path(path).is_file():
            check_kubeconfig(path)
            try:
                contexts, active = config.list_kube_config_contexts(config_file=path)
                names = [c["name"] for c in contexts or []]
                if context and context not in names:
                    raise ClusterError(f"context {context!r} is not in {path} (has: {', '.join(names) or 'none'})")
                self.context = context or (active or {}).get("name", "")
                cfg = client.Configuration()
                config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            except ConfigException as exc:
                raise ClusterError(f"cannot use kubeconfig {path}: {exc}") from None
            except (ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError) as exc:
                # what check_kubeconfig does not look at, failing inside the client's loader
                raise ClusterError(f"cannot use kubeconfig {path}: {_one_line(exc)}") from None
        else:
            try:
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                self.context = "in-cluster"
            except ConfigException:
                raise ClusterError(
                    f"no kubeconfig at {path} and not running in a cluster: pass --kubeconfig or set KUBECONFIG"
                ) from None
        # No retry: urllib3 would repeat a timed-out GET, doubling how long an unanswering API server keeps a
        # view on "loading…"; a connection the server closed while idle is detected before reuse anyway.
        cfg.retries = urllib3.util.Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0)
        self.server = cfg.host
        return client.ApiClient(cfg)

    def close(self) -> None:
        self.api.close()

    # Calls ---------------------------------------------------------------------------------------
    def _raise(self, exc: Exception, access: Access) -> None:
        if isinstance(exc, ApiException):
            if exc.status == 403:
                raise Forbidden(f"RBAC denies {access}: {_message(exc)}") from None
            if exc.status == 401:
                raise ClusterError(f"the cluster rejected the credentials of context {self.context!r}") from None
            if exc.status == 404:
                raise NotFound(f"not found: {access.resource} {access.name or ''} in namespace {access.namespace}")
            raise ClusterError(f"cannot {access}: HTTP {exc.status} {_message(exc)}") from None
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            reason = getattr(exc, "reason", None) or exc
            connect_timeout = urllib3.exceptions.ConnectTimeoutError  # a refused connection is one too, in urllib3
            if isinstance(reason, connect_timeout) and not isinstance(reason, urllib3.exceptions.NewConnectionError):
                raise Unreachable(
                    f"cannot reach the cluster at {self.server}: no connection within {self.timeout[0]:g}s"
                ) from None
            if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
                raise Unreachable(
                    f"cannot reach the cluster at {self.server}: no answer within {self.timeout[1]:g}s"
                ) from None
            text = str(reason)
            errno = re.search(r"\[Errno -?\d+\] ([^)\]]+)", text)
            text = errno.group(1).strip() if errno else text.split(": ", 1)[-1]
            raise Unreachable(f"cannot reach the cluster at {self.server}: {text}") from None
        raise exc

    def call(self, access: Access, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call with the JSON body returned as dicts."""
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            return json.loads(response.data or b"null")
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._raise(exc, access)
            raise  # unreachable: _raise always raises

    def stream(self, access: Access, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A call whose raw response is consumed incrementally (pod logs)."""
        try:
            return fn(*args, _preload_content=False, _request_timeout=(self.timeout[0], None), **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._raise(exc, access)
            raise

    def list(
        self,
        access: Access,
        fn: Callable[..., Any],
        *args: Any,
        label_selector: str = "",
        field_selector: str = "",
        max_items: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every list is scoped (selectors) and paginated; `max_items` bounds the total."""
        token: str | None = None
        seen = 0
        while True:
            page = PAGE if max_items is None else max(1, min(PAGE, max_items - seen))
            kwargs: dict[str, Any] = {"limit": page}
            if label_selector:
                kwargs["label_selector"] = label_selector
            if field_selector:
                kwargs["field_selector"] = field_selector
            if token:
                kwargs["_continue"] = token
            body = self.call(access, fn, *args, **kwargs)
            for item in body.get("items") or []:
                yield item
                seen += 1
            token = (body.get("metadata") or {}).get("continue")
            if not token or (max_items is not None and seen >= max_items):
                return

    def group_served(self, group: str, version: str) -> bool:
        """Whether an API group is installed (CNPG, its Barman Cloud plugin)."""
        try:
            self.api.call_api(
                f"/apis/{group}/{version}",
                "GET",
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            self._raise(exc, Access("get", "apiresources", "", group))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._raise(exc, Access("get", "apiresources", "", group))
        return False

    # Writes --------------------------------------------------------------------------------------
    def allowed(self, access: Access) -> tuple[bool, str]:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": access.namespace,
                    "verb": access.verb,
                    "group": access.group,
                    "resource": access.resource,
                    "subresource": access.subresource,
                    "name": access.name,
                }
            },
        }
        body = self.call(
            Access("create", "selfsubjectaccessreviews", access.namespace, "authorization.k8s.io"),
            self.auth.create_self_subject_access_review,
            review,
        )
        status = body.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")

    def write(self, access: Access, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The one door for every change to the cluster: read-only mode, then RBAC, then the call."""
        if self.read_only:
            raise ReadOnly(f"read-only mode: refusing to {access}")
        ok, reason = self.allowed(access)
        if not ok:
            raise Forbidden(f"RBAC denies {access}" + (f": {reason}" if reason else ""))
        return self.call(access, fn, *args, **kwargs)
