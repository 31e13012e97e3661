"""A Kubernetes API on 127.0.0.1 for the demo and the tests: kmock's emulator plus what our tools use.

kmock's `KubernetesEmulator` stores objects and serves list/get/create/patch/delete. A real API server
also honours label and field selectors and `limit`/`continue` pagination, answers
SelfSubjectAccessReviews from RBAC, refuses what RBAC denies with 403, streams pod logs and runs
`exec` over a websocket. Those are added here so the official `kubernetes` client talks to it exactly
as it talks to a cluster, and so tests can assert that every list call was scoped and bounded.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import random
import re
import string
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
from kmock import KubernetesEmulator, ResourceInfo, Server, resource

from immich_tui.services import clock
from immich_tui.services.library import INVENTORY_NAME, INVENTORY_SCRIPT

NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/?$")
VERBS = {"list": "list", "watch": "watch", "fetch": "get", "create": "create", "update": "patch", "delete": "delete"}

# What the emulated cluster serves: (group/version/plural, kind, namespaced).
CORE_RESOURCES = (
    ("v1/namespaces", "Namespace", False),
    ("v1/pods", "Pod", True),
    ("v1/secrets", "Secret", True),
    ("v1/events", "Event", True),
    ("batch/v1/jobs", "Job", True),
    ("batch/v1/cronjobs", "CronJob", True),
    ("authorization.k8s.io/v1/selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
)
CNPG_RESOURCES = (
    ("postgresql.cnpg.io/v1/clusters", "Cluster", True),
    ("postgresql.cnpg.io/v1/backups", "Backup", True),
    ("postgresql.cnpg.io/v1/scheduledbackups", "ScheduledBackup", True),
)
PLUGIN_RESOURCES = (("barmancloud.cnpg.io/v1/objectstores", "ObjectStore", True),)


def now_iso() -> str:
    """Creation times follow the services' clock, so a pinned clock gives reproducible objects."""
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Denial:
    """An RBAC rule the emulated user lacks: `verb` on `group`/`resource`[/`subresource`] (`*` = any)."""

    verb: str
    resource: str
    group: str = "*"
    subresource: str = "*"
    namespace: str = "*"

    def matches(self, verb: str, group: str, res: str, sub: str, namespace: str) -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", res)
            and self.group in ("*", group)
            and self.subresource in ("*", sub)
            and self.namespace in ("*", namespace)
        )


@dataclass
class PodLog:
    """A container's output. Writers append from any thread; followers see lines as they arrive."""

    lines: list[str] = field(default_factory=list)
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, line: str) -> None:
        with self.lock:
            self.lines.append(line.rstrip("\n"))

    def finish(self) -> None:
        self.finished = True


@dataclass
class ExecMount:
    """This pod answers `exec` of the library inventory script, run locally on `local_path`.

    Only that script, with the library mount and an epoch as its arguments, is ever run: the
    emulator listens on loopback, but no client of it gets to run a command of its choosing.
    """

    container_path: str
    local_path: str

    def argv(self, command: list[str]) -> list[str] | None:
        """The local command for an exec request, or None when it is not the inventory script."""
        expected = ["sh", "-c", INVENTORY_SCRIPT, INVENTORY_NAME, self.container_path]
        if len(command) != 6 or command[:5] != expected or not command[5].isdigit():
            return None
        return ["/bin/sh", "-c", INVENTORY_SCRIPT, INVENTORY_NAME, self.local_path, command[5]]


def _label_ok(labels: dict[str, str], selector: str) -> bool:
    """Equality (`a=b`, `a==b`, `a!=b`), set (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`)."""
    if not selector:
        return True
    terms: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    for raw in terms:
        term = raw.strip()
        if " notin " in term or " in " in term:
            negate = " notin " in term
            key, _, values = term.partition(" notin " if negate else " in ")
            wanted = {v.strip() for v in values.strip().strip("()").split(",")}
            present = labels.get(key.strip()) in wanted
            if present == negate:
                return False
        elif "!=" in term:
            key, _, value = term.partition("!=")
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, _, value = term.replace("==", "=").partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part, "") if isinstance(value, dict) else ""
    return str(value)


def _field_ok(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, _, value = term.partition("!=")
            if _field_value(obj, key) == value:
                return False
        else:
            key, _, value = term.replace("==", "=").partition("=")
            if _field_value(obj, key) != value:
                return False
    return True


def _changed_fields(patch: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The fields of a merge patch whose value it changed, as FieldsV1 (`{"f:spec": {"f:suspend": {}}}`)."""
    out: dict[str, Any] = {}
    for name, value in patch.items():
        if name == "managedFields":  # the server's own bookkeeping, never a field someone manages
            continue
        old = before.get(name) if isinstance(before, dict) else None
        new = after.get(name) if isinstance(after, dict) else None
        if isinstance(value, dict) and value:
            inner = _changed_fields(value, old if isinstance(old, dict) else {}, new if isinstance(new, dict) else {})
            if inner:
                out[f"f:{name}"] = inner
        elif old != new:
            out[f"f:{name}"] = {}
    return out


def _merge_fields(into: dict[str, Any], fields: dict[str, Any]) -> None:
    for name, inner in fields.items():
        _merge_fields(into.setdefault(name, {}), inner)


def _prune_fields(owned: dict[str, Any], obj: Any) -> None:
    for name in list(owned):
        value = obj.get(name[2:]) if isinstance(obj, dict) and name.startswith("f:") else None
        if value is None:
            del owned[name]
        elif isinstance(owned[name], dict) and owned[name]:
            _prune_fields(owned[name], value)
            if not owned[name]:
                del owned[name]


def _drop_fields(owned: dict[str, Any], fields: dict[str, Any]) -> None:
    """Take the changed leaf fields away from another manager, and the branches they leave empty."""
    for name, inner in fields.items():
        if name not in owned or not isinstance(owned[name], dict):
            continue
        if inner:
            _drop_fields(owned[name], inner)
            if not owned[name]:
                del owned[name]
        else:
            del owned[name]


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return aiohttp.web.json_response(body, status=code)


@attrs.define(kw_only=True)
class ClusterEmulator(KubernetesEmulator):
    """kmock's emulator with selectors, pagination, RBAC, SelfSubjectAccessReview, logs and exec."""

    denials: list[Denial] = attrs.field(factory=list)
    pod_logs: dict[tuple[str, str], PodLog] = attrs.field(factory=dict)
    exec_mounts: dict[tuple[str, str], ExecMount] = attrs.field(factory=dict)
    on_create: list[Callable[[str, dict[str, Any]], None]] = attrs.field(factory=list)
    user: str = "operator"

    @property
    def requests(self) -> list[Any]:
        """Every request served so far, in order (kmock records them), for assertions on scoping."""
        return list(self._requests)

    def serve(self, resources: tuple[tuple[str, str, bool], ...]) -> None:
        for key, kind, namespaced in resources:
            verbs = {"list", "get", "create", "patch", "update", "delete", "watch"}
            self.resources[key] = ResourceInfo(kind=kind, singular=kind.lower(), namespaced=namespaced, verbs=verbs)

    def denied(self, verb: str, group: str, res: str, sub: str, namespace: str) -> bool:
        return any(d.matches(verb, group, res, sub, namespace) for d in self.denials)

    def _forbidden(self, verb: str, group: str, res: str, sub: str, namespace: str) -> aiohttp.web.Response:
        what = f"{res}/{sub}" if sub else res
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        qualified = f"{what}.{group}" if group else what
        return _status(
            403,
            "Forbidden",
            f'{qualified} is forbidden: User "{self.user}" cannot {verb} resource "{what}" '
            f'in API group "{group}"{where}',
        )

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if raw_request.headers.get("Upgrade", "").lower() == "websocket" and raw_request.path.endswith("/exec"):
            return await self._exec(raw_request)
        return await super().__call__(raw_request)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        namespace_read = NAMESPACE_PATH.match(str(request.url.path))
        if namespace_read and request.method.value == "GET":
            return self._namespace(namespace_read[1])
        res = request.resource
        if res is not None and request.action is not None:
            verb = VERBS.get(request.action.value.lower(), request.action.value.lower())
            group, plural = res.group or "", res.plural or ""
            sub = request.subresource or ""
            if self.denied(verb, group, plural, sub, request.namespace or ""):
                return self._forbidden(verb, group, plural, sub, request.namespace or "")
            if plural == "selfsubjectaccessreviews" and verb == "create":
                return self._review(request.data or {})
            if plural == "pods" and sub == "log" and verb == "get":
                return await self._log(request)
            if verb == "create" and isinstance(request.data, dict):
                self._complete_metadata(request)
        before = await self._before_update(request)
        response = await super()._handle(request)
        if before is not None and response.status < 300:
            await self._record_manager(request, before)
        if (
            res is not None
            and request.action is not None
            and request.action.value.lower() == "create"
            and response.status < 300
        ):
            for hook in self.on_create:
                hook(res.plural or "", request.data)
        return response

    async def _before_update(self, request: Any) -> dict[str, Any] | None:
        """The object a patch is about to change, to tell afterwards which fields it changed."""
        if request.resource is None or request.action is None or request.action.value.lower() != "update":
            return None
        if request.name is None or not isinstance(request.data, dict):
            return None
        async with self._lock:
            try:
                obj = self._objects[request.resource, request.namespace, request.name]
            except KeyError:
                return None
            return None if obj.deleted else copy.deepcopy(obj.raw)

    async def _record_manager(self, request: Any, before: dict[str, Any]) -> None:
        """`metadata.managedFields` as the API server keeps it for an Update: the fields this request changed
        now belong to its manager (the `fieldManager` parameter, else the client's User-Agent product), with
        the time of the update, and to no other manager. Enough for a reader to date a change of a field."""
        manager = request.params.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            obj = self._objects[key]
            changed = _changed_fields(request.data, before, obj.raw)
            if not changed:
                return
            entries = [e for e in copy.deepcopy(before.get("metadata", {}).get("managedFields") or []) if e]
            mine = next((e for e in entries if e.get("manager") == manager and e.get("operation") == "Update"), None)
            for entry in entries:
                if entry is not mine:
                    _drop_fields(entry.get("fieldsV1") or {}, changed)
            entries = [e for e in entries if e is mine or e.get("fieldsV1")]
            if mine is None:
                mine = {"manager": manager, "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}
                entries.append(mine)
            mine["apiVersion"] = before.get("apiVersion", "")
            mine["time"] = now_iso()
            _merge_fields(mine["fieldsV1"], changed)
            for entry in entries:  # a field the patch removed belongs to nobody
                _prune_fields(entry["fieldsV1"], obj.raw)
            entries = [e for e in entries if e["fieldsV1"]]
            obj.patch({"metadata": {"managedFields": entries}})

    def _namespace(self, name: str) -> aiohttp.web.Response:
        """`GET /api/v1/namespaces/NAME`: kmock reads that path as a namespace without a resource."""
        if self.denied("get", "", "namespaces", "", ""):
            return self._forbidden("get", "", "namespaces", "", "")
        try:
            obj = self._objects["v1/namespaces", None, name]
        except KeyError:
            obj = None
        if obj is None or obj.deleted:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        return aiohttp.web.json_response(obj.raw)

    def _complete_metadata(self, request: Any) -> None:
        """What the API server adds on create: name from generateName, namespace, uid, timestamps."""
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        if request.namespace:
            meta.setdefault("namespace", request.namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        meta.setdefault("resourceVersion", str(time.monotonic_ns()))

    def _review(self, review: dict[str, Any]) -> aiohttp.web.Response:
        attrs_ = review.get("spec", {}).get("resourceAttributes", {})
        allowed = not self.denied(
            attrs_.get("verb", ""),
            attrs_.get("group", ""),
            attrs_.get("resource", ""),
            attrs_.get("subresource", ""),
            attrs_.get("namespace", ""),
        )
        review = dict(review, status={"allowed": allowed, **({} if allowed else {"reason": "no RBAC rule allows it"})})
        review.setdefault("apiVersion", "authorization.k8s.io/v1")
        review.setdefault("kind", "SelfSubjectAccessReview")
        return aiohttp.web.json_response(review, status=201)

    async def _serve_list(self, request: Any) -> dict[str, Any]:
        if request.resource not in self._get_resources():
            from kmock import KubernetesResourceNotFoundError

            raise KubernetesResourceNotFoundError()
        params = request.params
        labels, fields = params.get("labelSelector", ""), params.get("fieldSelector", "")
        items = []
        async with self._lock:
            for (res, namespace, _name), obj in self._objects.items():
                if res != request.resource or obj.deleted:
                    continue
                if request.namespace is not None and namespace != request.namespace:
                    continue
                raw = obj.raw
                if _label_ok(raw.get("metadata", {}).get("labels") or {}, labels) and _field_ok(raw, fields):
                    items.append(raw)
        items.sort(key=lambda o: (o.get("metadata", {}).get("namespace") or "", o.get("metadata", {}).get("name")))
        offset = int(base64.urlsafe_b64decode(params["continue"]).decode()) if params.get("continue") else 0
        limit = int(params.get("limit") or 0)
        page = items[offset : offset + limit] if limit else items[offset:]
        meta: dict[str, Any] = {"resourceVersion": str(time.monotonic_ns())}
        rest = len(items) - offset - len(page)
        if limit and rest > 0:
            meta["continue"] = base64.urlsafe_b64encode(str(offset + len(page)).encode()).decode()
            meta["remainingItemCount"] = rest
        return {"kind": "List", "apiVersion": "v1", "metadata": meta, "items": page}

    async def _log(self, request: Any) -> aiohttp.web.StreamResponse:
        key = (request.namespace or "", request.name or "")
        if (resource("v1", "pods"), key[0], key[1]) not in self._objects:
            return _status(404, "NotFound", f'pods "{key[1]}" not found')
        log = self.pod_logs.setdefault(key, PodLog())
        params = request.params
        follow = params.get("follow", "").lower() in ("true", "1", "t")  # Go's ParseBool: the client sends "True"
        tail = int(params["tailLines"]) if params.get("tailLines") else None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await response.prepare(request._raw_request)
        with log.lock:
            sent = len(log.lines)
            start = max(0, sent - tail) if tail is not None else 0
            first = log.lines[start:sent]
        if first:
            await response.write(("\n".join(first) + "\n").encode())
        while follow and not (log.finished and sent >= len(log.lines)):
            await asyncio.sleep(0.02)
            with log.lock:
                fresh = log.lines[sent:]
                sent += len(fresh)
            if fresh:
                try:
                    await response.write(("\n".join(fresh) + "\n").encode())
                except (ConnectionResetError, RuntimeError):
                    break
        await response.write_eof()
        return response

    async def _exec(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """The v4 channel protocol: byte 1 = stdout, 2 = stderr, 3 = the final status."""
        parts = raw_request.path.strip("/").split("/")  # api v1 namespaces NS pods NAME exec
        namespace, pod = parts[3], parts[5]
        if self.denied("create", "", "pods", "exec", namespace):
            return self._forbidden("create", "", "pods", "exec", namespace)
        command = raw_request.query.getall("command", [])
        mount = self.exec_mounts.get((namespace, pod))
        ws = aiohttp.web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(raw_request)
        argv = mount.argv(command) if mount is not None else None
        if argv is None:
            what = "the library inventory script" if mount is not None else "nothing"
            await ws.send_bytes(b"\x02" + f"this emulated pod runs {what} through exec\n".encode())
            code = 126
        else:
            done = await asyncio.get_running_loop().run_in_executor(
                None, lambda: subprocess.run(argv, capture_output=True, timeout=120, check=False)
            )
            if done.stdout:
                await ws.send_bytes(b"\x01" + done.stdout)
            if done.stderr:
                await ws.send_bytes(b"\x02" + done.stderr)
            code = done.returncode
        status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        if code:
            status = {
                "metadata": {},
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws


class EmulatorServer:
    """Runs a `ClusterEmulator` on its own event loop in a background thread, served on 127.0.0.1."""

    def __init__(self, emulator: ClusterEmulator | None = None) -> None:
        self.emulator = emulator or ClusterEmulator()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.emulator, Server(self.emulator, host="127.0.0.1") as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> EmulatorServer:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error}")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop, between requests, and return its result."""

        async def run() -> Any:
            async with self.emulator._lock:
                return fn()

        if not self._loop.is_running():
            raise RuntimeError("the Kubernetes emulator has stopped")
        future: Future[Any] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(30)

    # Object helpers, safe from any thread.
    def put(self, key: str, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        self.call(lambda: self.emulator.objects.__setitem__((key, meta.get("namespace"), meta["name"]), obj))

    def get(self, key: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            try:
                obj = self.emulator.objects[key, namespace, name]
            except KeyError:
                return None
            return None if obj.deleted else obj.raw

        return self.call(read)

    def patch(self, key: str, namespace: str | None, name: str, changes: dict[str, Any]) -> None:
        self.call(lambda: self.emulator.objects[key, namespace, name].patch(changes))

    def kubeconfig(self, context: str = "sandbox", namespace: str = "immich") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": "sandbox-token"}}],
            "contexts": [
                {"name": context, "context": {"cluster": context, "user": "operator", "namespace": namespace}}
            ],
            "current-context": context,
        }
