"""Kubernetes RBAC, evaluated over rendered Roles and RoleBindings the way the API server's RBAC
authorizer does (rules are only additive: a request is allowed when any bound rule covers it).

`AuthorizedKube` is the tools' own `Kube` with this authorizer in front of the emulated cluster: every call
is checked against the rules bound to one subject, and the tools' SelfSubjectAccessReviews are answered
from them, so a test runs the real code paths with exactly the permissions deploy/rbac grants.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from immich_tui.services.kube import Access, Forbidden, Kube

MASTERS = "system:masters"  # the API server allows this group everything before RBAC is asked


@dataclass(frozen=True)
class Subject:
    user: str
    groups: tuple[str, ...] = ("system:authenticated",)


def _covers(values: list[str], value: str) -> bool:
    return "*" in values or value in values


def _rule_allows(rule: dict[str, Any], verb: str, group: str, resource: str, subresource: str, name: str) -> bool:
    what = f"{resource}/{subresource}" if subresource else resource
    resources = rule.get("resources") or []
    if not (
        _covers(rule.get("verbs") or [], verb)
        and _covers(rule.get("apiGroups") or [], group)
        and ("*" in resources or what in resources or (subresource and f"*/{subresource}" in resources))
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or name in names  # a rule that names objects never covers a request without a name


class Rbac:
    def __init__(self, objects: Iterable[dict[str, Any]]) -> None:
        self.objects = [o for o in objects if o.get("apiVersion") == "rbac.authorization.k8s.io/v1"]

    def _role(self, ref: dict[str, Any], namespace: str | None) -> dict[str, Any] | None:
        for obj in self.objects:
            same = obj["kind"] == ref["kind"] and obj["metadata"]["name"] == ref["name"]
            if same and (ref["kind"] == "ClusterRole" or obj["metadata"].get("namespace") == namespace):
                return obj
        return None

    def rules(self, who: Subject, namespace: str) -> list[dict[str, Any]]:
        """Every rule bound to `who` that applies in `namespace`."""
        out: list[dict[str, Any]] = []
        for binding in self.objects:
            kind = binding["kind"]
            if kind not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if kind == "RoleBinding" and binding["metadata"].get("namespace") != namespace:
                continue
            if not any(
                (s["kind"] == "User" and s["name"] == who.user) or (s["kind"] == "Group" and s["name"] in who.groups)
                for s in binding.get("subjects") or []
            ):
                continue
            role = self._role(binding["roleRef"], binding["metadata"].get("namespace"))
            if role is not None:
                out += role.get("rules") or []
        return out

    def allows(
        self,
        who: Subject,
        verb: str,
        resource: str,
        namespace: str,
        group: str = "",
        subresource: str = "",
        name: str = "",
    ) -> bool:
        if MASTERS in who.groups:
            return True
        if (group, resource, verb) == ("authorization.k8s.io", "selfsubjectaccessreviews", "create"):
            return True  # the built-in system:basic-user ClusterRole: everyone may ask what they may do
        return any(_rule_allows(rule, verb, group, resource, subresource, name) for rule in self.rules(who, namespace))

    def allows_access(self, who: Subject, access: Access) -> bool:
        return self.allows(
            who, access.verb, access.resource, access.namespace, access.group, access.subresource, access.name
        )


class AuthorizedKube(Kube):
    """The tools' cluster access with RBAC in front: every call the services make is authorised for
    `who` against `rbac` first (Forbidden otherwise), and recorded."""

    def __init__(self, kubeconfig: str, rbac: Rbac, who: Subject) -> None:
        super().__init__(kubeconfig)
        self.rbac = rbac
        self.who = who
        self.accesses: list[Access] = []
        self.denied: list[Access] = []

    def _authorize(self, access: Access) -> None:
        self.accesses.append(access)
        if not self.rbac.allows_access(self.who, access):
            self.denied.append(access)
            raise Forbidden(f"RBAC denies {access}")

    def call(self, access: Access, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._authorize(access)
        return super().call(access, fn, *args, **kwargs)

    def stream(self, access: Access, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._authorize(access)
        return super().stream(access, fn, *args, **kwargs)

    def allowed(self, access: Access) -> tuple[bool, str]:
        """A SelfSubjectAccessReview, answered by the same rules."""
        ok = self.rbac.allows_access(self.who, access)
        return ok, "" if ok else "no rule of the rendered Roles allows it"
