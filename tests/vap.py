"""ValidatingAdmissionPolicies evaluated as the API server evaluates them, with cel-python (`celpy`) as the
CEL implementation: a policy's matchConstraints, each binding's matchResources and paramRef (with its
parameterNotFoundAction), then matchConditions, variables and validations, with `object`, `oldObject`,
`params`, `request` and `authorizer` bound as in Kubernetes.

Only what deploy/admission uses is implemented, and anything else in a policy or binding raises instead of
being ignored. A CEL evaluation error raises too (the API server would apply failurePolicy): the policies
must guard every optional field, and a test that expects a denial must get it from a validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes

from tests.rbac_eval import Rbac, Subject

POLICY_KEYS = {"failurePolicy", "matchConstraints", "paramKind", "matchConditions", "variables", "validations"}
CONSTRAINT_KEYS = {"resourceRules"}
RULE_KEYS = {"apiGroups", "apiVersions", "operations", "resources", "resourceNames"}
BINDING_KEYS = {"policyName", "validationActions", "paramRef", "matchResources"}
MATCH_KEYS = {"namespaceSelector", "objectSelector"}
SELECTOR_KEYS = {"matchLabels"}
VALIDATION_KEYS = {"expression", "message", "reason"}


class PolicyError(AssertionError):
    """The policy uses what this evaluator does not implement, or a CEL expression failed."""


@dataclass
class Request:
    """One admission request: `resource` is the plural, `subresource` e.g. "ephemeralcontainers"."""

    operation: str
    resource: str
    object: dict[str, Any]
    who: Subject
    old_object: dict[str, Any] | None = None
    subresource: str = ""

    @property
    def group_version(self) -> tuple[str, str]:
        group, _, version = str(self.object["apiVersion"]).rpartition("/")  # "v1" is the core group's
        return group, version

    @property
    def namespace(self) -> str:
        return str(self.object["metadata"].get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.object["metadata"].get("name", ""))


@dataclass
class Denial:
    policy: str
    message: str


class _AuthzPath(celtypes.MapType):
    """`authorizer.group(..).resource(..).namespace(..).name(..).check(verb)`, built up one call at a time."""

    def __init__(self, who: Subject, parts: dict[str, str] | None = None) -> None:
        super().__init__()
        self.who = who
        self.parts = dict(parts or {})

    def with_part(self, key: str, value: Any) -> _AuthzPath:
        return _AuthzPath(self.who, {**self.parts, key: str(value)})


def _authz_functions(rbac: Rbac) -> dict[str, Any]:
    def part(key: str) -> Any:
        return lambda target, value: target.with_part(key, value)

    def allowed(target: _AuthzPath) -> celtypes.BoolType:
        p = target.parts
        return celtypes.BoolType(
            rbac.allows(
                target.who,
                p["verb"],
                p.get("resource", ""),
                p.get("namespace", ""),
                p.get("group", ""),
                p.get("subresource", ""),
                p.get("name", ""),
            )
        )

    return {
        "group": part("group"),
        "resource": part("resource"),
        "subresource": part("subresource"),
        "namespace": part("namespace"),
        "name": part("name"),
        "check": part("verb"),
        "allowed": allowed,
    }


def _labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if set(selector) - SELECTOR_KEYS:
        raise PolicyError(f"selector fields not implemented: {sorted(set(selector) - SELECTOR_KEYS)}")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _covers(values: list[str], value: str) -> bool:
    return "*" in values or value in values


class Admission:
    """The rendered policies and bindings of deploy/admission, with the cluster state they read: the
    namespaces' labels, the objects a paramRef can name, and the RBAC behind `authorizer`."""

    def __init__(
        self,
        manifests: list[dict[str, Any]],
        *,
        rbac: Rbac,
        objects: list[dict[str, Any]],
        namespaces: dict[str, dict[str, str]],
    ) -> None:
        self.policies = {o["metadata"]["name"]: o for o in manifests if o["kind"] == "ValidatingAdmissionPolicy"}
        self.bindings = [o for o in manifests if o["kind"] == "ValidatingAdmissionPolicyBinding"]
        self.rbac = rbac
        self.objects = objects
        self.namespaces = namespaces
        self._env = celpy.Environment()
        self._programs: dict[str, Any] = {}
        self._functions = _authz_functions(rbac)
        for policy in self.policies.values():
            if set(policy["spec"]) - POLICY_KEYS:
                raise PolicyError(f"policy fields not implemented: {sorted(set(policy['spec']) - POLICY_KEYS)}")
        for binding in self.bindings:
            if set(binding["spec"]) - BINDING_KEYS:
                raise PolicyError(f"binding fields not implemented: {sorted(set(binding['spec']) - BINDING_KEYS)}")
            if binding["spec"]["validationActions"] != ["Deny"]:
                raise PolicyError("only validationActions [Deny] is implemented")

    def expressions(self) -> list[str]:
        """Every CEL expression of every policy."""
        out: list[str] = []
        for policy in self.policies.values():
            spec = policy["spec"]
            out += [c["expression"] for c in spec.get("matchConditions") or []]
            out += [v["expression"] for v in spec.get("variables") or []]
            out += [v["expression"] for v in spec["validations"]]
        return out

    def compile_all(self) -> int:
        """Compile every expression (a syntax error raises); the number compiled."""
        expressions = self.expressions()
        for expression in expressions:
            self._env.compile(expression)
        return len(expressions)

    def _eval(self, policy: str, expression: str, activation: dict[str, Any]) -> Any:
        program = self._programs.get(expression)
        if program is None:
            program = self._env.program(self._env.compile(expression), functions=self._functions)
            self._programs[expression] = program
        try:
            return program.evaluate(activation)
        except celpy.CELEvalError as exc:
            raise PolicyError(f"{policy}: {expression!r} failed: {exc}") from exc

    def _constraints_match(self, spec: dict[str, Any], req: Request) -> bool:
        constraints = spec["matchConstraints"]
        if set(constraints) - CONSTRAINT_KEYS:
            raise PolicyError(f"matchConstraints fields not implemented: {sorted(set(constraints) - CONSTRAINT_KEYS)}")
        group, version = req.group_version
        what = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
        for rule in constraints["resourceRules"]:
            if set(rule) - RULE_KEYS:
                raise PolicyError(f"resourceRules fields not implemented: {sorted(set(rule) - RULE_KEYS)}")
            if (
                _covers(rule["apiGroups"], group)
                and _covers(rule["apiVersions"], version)
                and _covers(rule["operations"], req.operation)
                and _covers(rule["resources"], what)
                and (not rule.get("resourceNames") or req.name in rule["resourceNames"])
            ):
                return True
        return False

    def _binding_matches(self, binding: dict[str, Any], req: Request) -> bool:
        match = binding["spec"].get("matchResources") or {}
        if set(match) - MATCH_KEYS:
            raise PolicyError(f"matchResources fields not implemented: {sorted(set(match) - MATCH_KEYS)}")
        if "namespaceSelector" in match and not _labels_match(
            match["namespaceSelector"], self.namespaces.get(req.namespace, {})
        ):
            return False
        if "objectSelector" in match:  # on an update, the object before or after may match
            candidates = [o for o in (req.object, req.old_object) if o is not None]
            return any(_labels_match(match["objectSelector"], o["metadata"].get("labels") or {}) for o in candidates)
        return True

    def _param(self, policy: dict[str, Any], binding: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """(found, the parameter object); without paramKind there is none to find."""
        kind = policy["spec"].get("paramKind")
        if kind is None:
            return True, None
        ref = binding["spec"]["paramRef"]
        for obj in self.objects:
            meta = obj["metadata"]
            if (obj["apiVersion"], obj["kind"]) == (kind["apiVersion"], kind["kind"]) and (
                meta["name"],
                meta.get("namespace"),
            ) == (ref["name"], ref["namespace"]):
                return True, obj
        return False, None

    def review(self, req: Request) -> list[Denial]:
        """Every denial the bound policies give this request; an empty list admits it."""
        denials: list[Denial] = []
        for binding in self.bindings:
            name = binding["spec"]["policyName"]
            policy = self.policies[name]
            spec = policy["spec"]
            if not self._constraints_match(spec, req) or not self._binding_matches(binding, req):
                continue
            found, params = self._param(policy, binding)
            if not found:
                if binding["spec"]["paramRef"].get("parameterNotFoundAction") == "Deny":
                    denials.append(Denial(name, "no params found for policy binding with `Deny` action"))
                continue
            denials += self._validate(name, spec, req, params)
        return denials

    def _validate(self, name: str, spec: dict[str, Any], req: Request, params: dict[str, Any] | None) -> list[Denial]:
        request = {
            "operation": req.operation,
            "name": req.name,
            "namespace": req.namespace,
            "resource": {"group": req.group_version[0], "version": req.group_version[1], "resource": req.resource},
            "userInfo": {"username": req.who.user, "groups": list(req.who.groups)},
        }
        if req.subresource:
            request["subResource"] = req.subresource
        activation: dict[str, Any] = {
            "object": celpy.json_to_cel(req.object),
            "oldObject": celpy.json_to_cel(req.old_object),
            "params": celpy.json_to_cel(params),
            "request": celpy.json_to_cel(request),
            "authorizer": _AuthzPath(req.who),
        }
        for condition in spec.get("matchConditions") or []:
            result = self._eval(name, condition["expression"], activation)
            if not isinstance(result, celtypes.BoolType):
                raise PolicyError(f"{name}: matchCondition {condition['name']} is not a bool")
            if not result:
                return []
        variables = celtypes.MapType()
        activation["variables"] = variables
        for variable in spec.get("variables") or []:
            variables[celtypes.StringType(variable["name"])] = self._eval(name, variable["expression"], activation)
        denials: list[Denial] = []
        for validation in spec["validations"]:
            if set(validation) - VALIDATION_KEYS:
                raise PolicyError(f"validation fields not implemented: {sorted(set(validation) - VALIDATION_KEYS)}")
            result = self._eval(name, validation["expression"], activation)
            if not isinstance(result, celtypes.BoolType):
                raise PolicyError(f"{name}: {validation['expression']!r} is not a bool")
            if not result:
                denials.append(Denial(name, validation["message"]))
        return denials
