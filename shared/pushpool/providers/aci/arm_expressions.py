"""ARM template expressions (``"[concat('a', parameters('b'))]"``), evaluated without an ARM deployment.

Prefect's ACI worker sends the pool's ``arm_template`` to ARM as a deployment, which evaluates every template
function; pushpool PUTs the container group itself, so it evaluates the expressions here, as ARM documents them
(https://learn.microsoft.com/azure/azure-resource-manager/templates/template-functions). Supported: the deterministic
functions a container group's template may use — parameters, variables, resourceGroup(), subscription() (id and
subscriptionId), resourceId, string, array, object, logical, comparison and numeric functions. The others (uniqueString,
guid, newGuid, utcNow, reference, list*, deployment() …) need ARM itself or ARM's own hashes: an expression using one
is refused by name, with the reason, before anything is sent (:class:`ArmExpressionError`).

Function names are case-insensitive (ARM's rule); string literals are single-quoted with ``''`` for a quote; a value
starting ``[[`` is the literal text without its first bracket.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import Any


class ArmExpressionError(ValueError):
    """An expression pushpool cannot evaluate (the message names it and says why)."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w]*)|(?P<op>[(),.\[\]]))"
)
NEEDS_ARM = (
    "uniquestring",
    "guid",
    "newguid",
    "utcnow",
    "reference",
    "deployment",
    "environment",
    "managementgroup",
    "tenant",
    "pickzones",
    "providers",
)


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and value.endswith("]") and not value.startswith("[[")


def evaluate(value: Any, context: Mapping[str, Any]) -> Any:
    """``value`` (any JSON) with every expression string evaluated.

    ``context``: ``parameters`` and ``variables`` (name → value, evaluated lazily where a value is an expression),
    ``subscription_id``, ``resource_group`` and ``location``.

    Raises:
        ArmExpressionError: an expression is malformed or uses what needs an ARM deployment.
    """
    if isinstance(value, dict):
        return {k: evaluate(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate(v, context) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith("[["):
        return value[1:]
    if not is_expression(value):
        return value
    return _Parser(value, context).parse()


class _Parser:
    def __init__(self, text: str, context: Mapping[str, Any]) -> None:
        self.text, self.context = text, context
        body = text[1:-1]
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(body):
            match = _TOKEN.match(body, position)
            if not match or match.end() == position:
                if body[position:].strip() == "":
                    break
                raise ArmExpressionError(f"arm_template expression {text!r} is malformed near {body[position:]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match[kind]))
            position = match.end()
        self.at = 0

    def parse(self) -> Any:
        value = self._expression()
        if self.at != len(self.tokens):
            raise ArmExpressionError(f"arm_template expression {self.text!r} is malformed")
        return value

    def _next(self) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise ArmExpressionError(f"arm_template expression {self.text!r} ends too early")
        token = self.tokens[self.at]
        self.at += 1
        return token

    def _peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def _expression(self) -> Any:
        kind, text = self._next()
        if kind == "str":
            value: Any = text[1:-1].replace("''", "'")
        elif kind == "num":
            value = float(text) if "." in text else int(text)
        elif kind == "name" and text.lower() in ("true", "false", "null") and self._peek() != "(":
            value = {"true": True, "false": False, "null": None}[text.lower()]
        elif kind == "name":
            if self._next()[1] != "(":
                raise ArmExpressionError(f"arm_template expression {self.text!r}: {text} is not a function call")
            arguments = []
            while self._peek() != ")":
                arguments.append(self._expression())
                if self._peek() == ",":
                    self.at += 1
            self.at += 1
            value = self._call(text, arguments)
        else:
            raise ArmExpressionError(f"arm_template expression {self.text!r} is malformed near {text!r}")
        while self._peek() in (".", "["):
            if self._next()[1] == ".":
                key = self._next()[1]
                value = self._member(value, key)
            else:
                index = self._expression()
                if self._next()[1] != "]":
                    raise ArmExpressionError(f"arm_template expression {self.text!r} is malformed")
                value = self._member(value, index)
        return value

    def _member(self, value: Any, key: Any) -> Any:
        try:
            if isinstance(value, Mapping):
                found = {str(k).lower(): v for k, v in value.items()}
                return found[str(key).lower()]
            return value[int(key)]
        except (KeyError, IndexError, TypeError, ValueError):
            raise ArmExpressionError(
                f"arm_template expression {self.text!r}: {key!r} is not known without an ARM deployment"
            ) from None

    def _call(self, name: str, args: list[Any]) -> Any:
        lower = name.lower()
        if lower in NEEDS_ARM or lower.startswith("list"):
            raise ArmExpressionError(
                f"arm_template expression {self.text!r} uses {name}(), which only an ARM deployment can evaluate "
                "(pushpool creates the container group without one): use a literal value or a parameter instead"
            )
        function = _FUNCTIONS.get(lower)
        if function is None:
            raise ArmExpressionError(
                f"arm_template expression {self.text!r} uses {name}(), which pushpool does not know"
            )
        try:
            return function(self.context, *args)
        except ArmExpressionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a wrong argument: refused with the function's name
            raise ArmExpressionError(f"arm_template expression {self.text!r}: {name}() failed: {exc}") from None


def _lookup(kind: str) -> Callable[..., Any]:
    def look(context: Mapping[str, Any], name: str) -> Any:
        values = context.get(kind) or {}
        if name not in values:
            raise ArmExpressionError(f"arm_template uses {kind[:-1]} {name!r}, which it does not declare")
        return evaluate(values[name], context)

    return look


def _resource_group(context: Mapping[str, Any]) -> dict[str, Any]:
    sub, rg = context["subscription_id"], context["resource_group"]
    return {
        "id": f"/subscriptions/{sub}/resourceGroups/{rg}",
        "name": rg,
        "type": "Microsoft.Resources/resourceGroups",
        "location": context["location"],
    }


def _subscription(context: Mapping[str, Any]) -> dict[str, Any]:
    sub = context["subscription_id"]
    return {"id": f"/subscriptions/{sub}", "subscriptionId": sub}


def _resource_id(context: Mapping[str, Any], *args: Any) -> str:
    sub, rg = context["subscription_id"], context["resource_group"]
    parts = [str(a) for a in args]
    type_index = next(i for i, p in enumerate(parts) if "/" in p and "." in p.split("/")[0])
    if type_index == 2:
        sub, rg = parts[0], parts[1]
    elif type_index == 1:
        rg = parts[0]
    resource_type, names = parts[type_index], parts[type_index + 1 :]
    namespace, *types = resource_type.split("/")
    if len(types) != len(names):
        raise ValueError(f"{resource_type} needs {len(types)} name(s)")
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{path}"


def _format(context: Mapping[str, Any], template: str, *args: Any) -> str:
    def one(match: re.Match[str]) -> str:
        value = args[int(match[1])]
        return _string(context, value)

    return (
        re.sub(r"\{(\d+)\}", one, template.replace("{{", "\0").replace("}}", "\1"))
        .replace("\0", "{")
        .replace("\1", "}")
    )


def _string(context: Mapping[str, Any], value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # ARM's string(true) is "True"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _concat(context: Mapping[str, Any], *args: Any) -> Any:
    if args and all(isinstance(a, list) for a in args):
        return [x for a in args for x in a]
    return "".join(_string(context, a) for a in args)


def _substring(context: Mapping[str, Any], text: str, start: int, length: int | None = None) -> str:
    if start < 0 or start > len(text) or (length is not None and (length < 0 or start + length > len(text))):
        raise ValueError("index out of range")
    return text[start:] if length is None else text[start : start + length]


def _int(context: Mapping[str, Any], value: Any) -> int:
    return int(value)


def _equals(context: Mapping[str, Any], a: Any, b: Any) -> bool:
    return a == b


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "parameters": _lookup("parameters"),
    "variables": _lookup("variables"),
    "resourcegroup": _resource_group,
    "subscription": _subscription,
    "resourceid": _resource_id,
    "concat": _concat,
    "format": _format,
    "string": _string,
    "tolower": lambda c, s: str(s).lower(),
    "toupper": lambda c, s: str(s).upper(),
    "trim": lambda c, s: str(s).strip(),
    "replace": lambda c, s, old, new: str(s).replace(old, new),
    "substring": _substring,
    "length": lambda c, v: len(v),
    "take": lambda c, v, n: v[: max(int(n), 0)],
    "skip": lambda c, v, n: v[max(int(n), 0) :],
    "first": lambda c, v: v[0] if v else ("" if isinstance(v, str) else None),
    "last": lambda c, v: v[-1] if v else ("" if isinstance(v, str) else None),
    "split": lambda c, s, sep: (
        str(s).split(sep) if isinstance(sep, str) else re.split("|".join(map(re.escape, sep)), s)
    ),
    "join": lambda c, items, sep: str(sep).join(_string(c, i) for i in items),
    "contains": lambda c, v, item: (item in v) if not isinstance(v, str) else str(item).lower() in v.lower(),
    "startswith": lambda c, s, p: str(s).lower().startswith(str(p).lower()),
    "endswith": lambda c, s, p: str(s).lower().endswith(str(p).lower()),
    "indexof": lambda c, s, p: str(s).lower().find(str(p).lower()),
    "lastindexof": lambda c, s, p: str(s).lower().rfind(str(p).lower()),
    "padleft": lambda c, v, n, ch=" ": _string(c, v).rjust(int(n), str(ch)),
    "base64": lambda c, s: base64.b64encode(str(s).encode()).decode(),
    "base64tostring": lambda c, s: base64.b64decode(str(s)).decode(),
    "json": lambda c, s: json.loads(s),
    "int": _int,
    "bool": lambda c, v: v if isinstance(v, bool) else str(v).lower() == "true" or v == 1,
    "createarray": lambda c, *v: list(v),
    "array": lambda c, v: v if isinstance(v, list) else [v],
    "createobject": lambda c, *kv: {kv[i]: kv[i + 1] for i in range(0, len(kv), 2)},
    "empty": lambda c, v: v is None or len(v) == 0,
    "coalesce": lambda c, *v: next((x for x in v if x is not None), None),
    "if": lambda c, cond, a, b: a if cond else b,
    "equals": _equals,
    "not": lambda c, v: not v,
    "and": lambda c, *v: all(v),
    "or": lambda c, *v: any(v),
    "less": lambda c, a, b: a < b,
    "lessorequals": lambda c, a, b: a <= b,
    "greater": lambda c, a, b: a > b,
    "greaterorequals": lambda c, a, b: a >= b,
    "add": lambda c, a, b: int(a) + int(b),
    "sub": lambda c, a, b: int(a) - int(b),
    "mul": lambda c, a, b: int(a) * int(b),
    "div": lambda c, a, b: int(int(a) / int(b)),
    "mod": lambda c, a, b: int(a) % int(b),
    "min": lambda c, *v: min(v[0] if len(v) == 1 and isinstance(v[0], list) else v),
    "max": lambda c, *v: max(v[0] if len(v) == 1 and isinstance(v[0], list) else v),
}
