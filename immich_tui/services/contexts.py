"""The kubeconfig's contexts, and a `Services` for another context and namespaces (k9s's `:ctx`).

Switching never changes the kubeconfig file (unlike `kubectl config use-context`): other terminals and the
operator's kubectl keep their context. The new `Services` names the chosen context explicitly, so a
KUBECONFIG edited meanwhile cannot move it elsewhere. The old `Services` is left as it was: the caller
closes it once the new one is in use, and keeps it if the switch is refused.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import config
from kubernetes.config.config_exception import ConfigException

from immich_tui.services.errors import ServiceError
from immich_tui.services.kube import ClusterError, check_kubeconfig, kubeconfig_path
from immich_tui.services.status import Services

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidNamespace(ServiceError):
    """A namespace the API server would refuse (it must be a DNS-1123 label)."""


@dataclass(frozen=True)
class ContextChoice:
    context: str
    namespace: str
    db_namespace: str


@dataclass
class ContextList:
    contexts: list[str] = field(default_factory=list)  # sorted by name
    current: str = ""  # the one the services use now ("in-cluster" for the service account)
    path: str = ""  # the kubeconfig they come from, "" in a cluster


def namespace_problem(name: str, what: str = "namespace") -> str:
    """The one line saying why `name` cannot be a namespace, or "" when it can."""
    if DNS_1123_LABEL.match(name):
        return ""
    shown = name if len(name) <= 80 and name.isprintable() else repr(name[:80])[1:-1] + "…"
    return f"{what} '{shown}' is not a DNS-1123 label (lowercase a-z, 0-9 and '-', 1-63)"


def available(services: Services) -> ContextList:
    """The contexts of the kubeconfig the services read (`--kubeconfig`, else KUBECONFIG, else
    ~/.kube/config); without one, the only context is the one the services connect with (in-cluster)."""
    path = kubeconfig_path(services.target.kubeconfig)
    if not Path(path).is_file():
        return ContextList([services.kube.context], services.kube.context)  # Kube names what is wrong
    check_kubeconfig(path)
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except ConfigException as exc:
        raise ClusterError(f"cannot use kubeconfig {path}: {' '.join(str(exc).split())}") from None
    except (ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError) as exc:
        raise ClusterError(f"cannot use kubeconfig {path}: {type(exc).__name__}") from None
    names = sorted({c["name"] for c in contexts or [] if isinstance(c, dict) and isinstance(c.get("name"), str)})
    current = services.target.context or (active or {}).get("name", "")
    return ContextList(names, current if isinstance(current, str) else "", path)


def switch(services: Services, choice: ContextChoice) -> Services:
    """A new `Services` for the chosen context and namespaces, every other setting kept. Its kubeconfig
    entry is loaded here (no request is made), so a context that cannot be used is refused now, in one
    line, while the current one still works."""
    for name, what in ((choice.namespace, "namespace"), (choice.db_namespace, "database namespace")):
        problem = namespace_problem(name, what)
        if problem:
            raise InvalidNamespace(problem)
    known = available(services)
    if choice.context not in known.contexts:
        where = known.path or "this cluster's service account"
        raise ClusterError(f"context {choice.context!r} is not in {where} (has: {', '.join(known.contexts) or 'none'})")
    context = None if not known.path else choice.context  # in a cluster there is no context to name
    target = dataclasses.replace(
        services.target, context=context, namespace=choice.namespace, db_namespace=choice.db_namespace
    )
    fresh = Services(target, env=services.env)
    fresh.kube  # noqa: B018 - connect now: a broken context is refused before the caller lets go of the old one
    return fresh
