"""infra/template.yaml's IAM policies, resolved and evaluated as AWS evaluates identity policies — small, and honest
about what it leaves out.

``resolve`` turns a template node into plain JSON for one deployment (partition, account, region, parameters): it
knows ``Ref``, ``Fn::Sub``, ``Fn::If`` (with the template's conditions), ``Fn::GetAtt`` and ``AWS::NoValue``.
``Policy.decide(action, resource, context)`` is AWS's identity-policy logic for one (action, resource) pair: an
explicit Deny wins, else an Allow whose Action, Resource and every Condition match, else an implicit deny. Conditions:
the String*, Arn* and ``Null`` operators, ``ForAllValues:`` / ``ForAnyValue:``, several values (any matches) and
several keys (all must); a negated operator is true when its key is absent, as in AWS. What it does not model
(``NotAction``, ``NotResource``, ``NotPrincipal``, policy variables, other operators) makes ``decide`` raise instead of
guessing. A request that touches several resources (CreateSubnet: the new subnet and its VPC) is several pairs, each
of which must be allowed: ``requests`` in tests/security/test_provision_role.py says which.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "template.yaml"
ACCOUNT = "123456789012"
SECRET_ARN = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:pushpool-stack-key-AbCdEf"
STACK = "pushpool"
DEFAULT_PARAMETERS = {
    "PrefectApiUrl": "https://prefect.example.com/api",
    "PrefectApiKeySecretArn": SECRET_ARN,
    "WebhookTokenSecretArn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:pushpool-webhook-AbCdEf",
    "EcsClusterArn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/pushpool-prod",
    "TaskExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/pushpool-prod-exec",
    "TaskRoleArn": "",
}


def load_template() -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(TEMPLATE))


@dataclass
class Deployment:
    """One stack: its pseudo parameters and parameters, against which the template resolves."""

    region: str = "us-east-1"
    account: str = ACCOUNT
    partition: str = "aws"
    parameters: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PARAMETERS))
    template: dict[str, Any] = field(default_factory=load_template)

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": self.partition,
            "AWS::StackName": STACK,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.template.get("Parameters", {}):
            return self.template["Parameters"][name].get("Default", "")
        resource = self.template["Resources"][name]
        if resource["Type"] == "AWS::IAM::ManagedPolicy":  # Ref of a managed policy is its ARN
            policy_name = self.resolve(resource["Properties"]["ManagedPolicyName"])
            return f"arn:{self.partition}:iam::{self.account}:policy/{policy_name}"
        return f"<{name}>"

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return _NO_VALUE if value == "AWS::NoValue" else self.ref(value)
            if key == "Fn::Sub":
                text, extra = (value, {}) if isinstance(value, str) else (value[0], self.resolve(value[1]))
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(extra.get(m.group(1), self.ref(m.group(1)))), text)
            if key == "Fn::If":
                chosen = value[1] if self.condition(value[0]) else value[2]
                return self.resolve(chosen)
            if key == "Fn::GetAtt":
                return f"<{value[0] if isinstance(value, list) else value}>"
            if key == "Fn::Equals":
                left, right = self.resolve(value[0]), self.resolve(value[1])
                return left == right
            if key == "Fn::Not":
                return not self.resolve(value[0])
        out = {}
        for k, v in node.items():
            resolved = self.resolve(v)
            if resolved is not _NO_VALUE:
                out[k] = resolved
        return out

    def function_policy(self, function: str) -> Policy:
        statements: list[dict[str, Any]] = []
        for policy in self.template["Resources"][function]["Properties"]["Policies"]:
            statements += [s for s in self.resolve(policy["Statement"]) if s]
        return Policy(statements)

    def managed_policy(self, name: str) -> Policy:
        return Policy(self.resolve(self.template["Resources"][name]["Properties"]["PolicyDocument"])["Statement"])


_NO_VALUE = object()


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


_OPERATORS = {
    "StringEquals": (lambda want, got: got == want, False),
    "StringNotEquals": (lambda want, got: got == want, True),
    "StringEqualsIgnoreCase": (lambda want, got: got.lower() == want.lower(), False),
    "StringLike": (lambda want, got: _glob(want, got), False),
    "StringNotLike": (lambda want, got: _glob(want, got), True),
    "ArnEquals": (lambda want, got: got == want, False),
    "ArnLike": (lambda want, got: _glob(want, got), False),
    "ArnNotEquals": (lambda want, got: got == want, True),
    "ArnNotLike": (lambda want, got: _glob(want, got), True),
}


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, Any]) -> bool:
    present = key in context
    got = [str(v) for v in _as_list(context.get(key))] if present else []
    wanted = [str(w).lower() if isinstance(w, bool) else str(w) for w in _as_list(wanted)]
    if operator == "Null":  # "true": the key must be absent; "false": present
        return (not present) == (wanted[0] == "true")
    qualifier, _, base = operator.rpartition(":")
    if base not in _OPERATORS:
        raise NotImplementedError(f"condition operator {operator} is not modelled")
    match, negated = _OPERATORS[base]
    if qualifier and negated:
        raise NotImplementedError(f"condition operator {operator} is not modelled")
    if qualifier == "ForAllValues":  # every value in the request matches one of the policy's (true when none)
        return all(any(match(w, g) for w in wanted) for g in got)
    if qualifier == "ForAnyValue":
        return any(match(w, g) for w in wanted for g in got)
    if qualifier:
        raise NotImplementedError(f"condition qualifier {qualifier} is not modelled")
    if not present:
        return negated  # AWS: a negated operator on an absent key is true, any other operator false
    hit = any(match(w, g) for w in wanted for g in got)
    return not hit if negated else hit


@dataclass
class Policy:
    statements: list[dict[str, Any]]

    def __post_init__(self) -> None:
        for s in self.statements:
            unmodelled = {"NotAction", "NotResource", "NotPrincipal", "Principal"} & set(s)
            if unmodelled or any("${" in str(r) for r in _as_list(s.get("Resource"))):
                raise NotImplementedError(f"statement {s.get('Sid')}: {unmodelled or 'policy variables'}")

    def matching(self, action: str, resource: str, context: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            s
            for s in self.statements
            if any(_glob(a, action, case=False) for a in _as_list(s["Action"]))
            and any(_glob(r, resource) for r in _as_list(s["Resource"]))
            and all(
                _condition_holds(operator, key, wanted, context)
                for operator, block in (s.get("Condition") or {}).items()
                for key, wanted in block.items()
            )
        ]

    def decide(self, action: str, resource: str, context: Mapping[str, Any] | None = None) -> str:
        """ "Allow", "ExplicitDeny" or "ImplicitDeny", with the Sids that decided it after a colon."""
        found = self.matching(action, resource, context or {})
        denies = [s.get("Sid", "?") for s in found if s["Effect"] == "Deny"]
        if denies:
            return "ExplicitDeny:" + ",".join(denies)
        allows = [s.get("Sid", "?") for s in found if s["Effect"] == "Allow"]
        return "Allow:" + ",".join(allows) if allows else "ImplicitDeny"

    def allows(self, action: str, resource: str, context: Mapping[str, Any] | None = None) -> bool:
        return self.decide(action, resource, context).startswith("Allow")


@dataclass
class Request:
    """One authorisation AWS makes for a call: an action on one resource, with the request's context keys."""

    action: str
    resource: str
    context: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        keys = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {self.resource}" + (f" [{keys}]" if keys else "")


def tag_context(tags: Iterable[Mapping[str, str]] | Mapping[str, str] | None) -> dict[str, Any]:
    """``aws:RequestTag/<key>`` and ``aws:TagKeys`` of a request that carries ``tags``."""
    pairs = tags.items() if isinstance(tags, Mapping) else [(t["Key"], t["Value"]) for t in tags or []]
    context: dict[str, Any] = {f"aws:RequestTag/{k}": v for k, v in pairs}
    if context:
        context["aws:TagKeys"] = [k.split("/", 1)[1] for k in context]
    return context
