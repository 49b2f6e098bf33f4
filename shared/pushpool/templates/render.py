"""Rendering a base job template for one flow run, with Prefect's own semantics.

This is the behaviour of ``BaseJobConfiguration.resolve_for_flow_run`` / ``from_template_and_values`` and
``prefect.utilities.templating`` (Prefect 3.8), re-implemented without importing ``prefect``:

1. job variables = deployment ``job_variables``, then flow-run ``job_variables`` on top; ``env`` merged key-wise;
2. variable defaults (non-null only) under them; an ``env`` default is merged into a literal ``env`` mapping or
   replaces an ``{{ env }}`` placeholder; dotted keys (``"env.FOO"``) are expanded, the nested form winning;
3. placeholders ``{{ name }}`` are applied: a string that is exactly one placeholder takes the value with its type
   (dict, list, int …); a placeholder inside text is stringified; a missing value removes the dict key or list
   item (and becomes "" inside text); ``{{ $NAME }}`` inside text reads the environment given to the renderer;
4. ``{"$ref": {"block_document_id": …}}`` becomes the block document's data, and ``{{ prefect.blocks.<type>.<name>
   [.path] }}`` the block's value (a single-``value`` block resolves to that value);
5. ``{{ prefect.variables.<name> }}`` becomes the variable's value ("" when it does not exist).

The test suite checks this module against Prefect's implementation on Prefect's own default templates.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Protocol

from pushpool.errors import ObjectNotFoundError, TemplateError

PLACEHOLDER = re.compile(r"({{\s*([\w\.\-\[\]$]+)\s*}})")
BLOCK_PREFIX = "prefect.blocks."
VARIABLE_PREFIX = "prefect.variables."
ENV_PREFIX = "$"


class _NotSet:
    _instance: _NotSet | None = None

    def __new__(cls) -> _NotSet:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NotSet"


NOTSET: Any = _NotSet()


class Resolver(Protocol):
    """Where block documents and variables come from (the orchestrator client, in production)."""

    def block_data_by_id(self, block_document_id: str) -> dict[str, Any]: ...

    def block_data_by_name(self, block_type_slug: str, name: str) -> dict[str, Any]: ...

    def variable(self, name: str) -> Any:
        """The variable's value, or NOTSET when it does not exist."""


# -- step 1 and 2: the values ---------------------------------------------------------------------------------


def merge_job_variables(deployment_vars: Mapping[str, Any] | None, flow_run_vars: Mapping[str, Any] | None) -> dict:
    """Deployment job variables with the flow run's on top; ``env`` merged key-wise (as Prefect's workers do)."""
    merged = copy.deepcopy(dict(deployment_vars or {}))
    run_vars = copy.deepcopy(dict(flow_run_vars or {}))
    if isinstance(merged.get("env"), dict):
        merged["env"].update(run_vars.pop("env", None) or {})
    merged.update(run_vars)
    return merged


def _split_path(path: str) -> list[str]:
    return path.replace("[", ".").replace("]", "").split(".")


def get_path(data: Any, path: str, default: Any = NOTSET) -> Any:
    """``a.b[0].c`` lookup in nested dicts and lists; ``default`` when any step is missing."""
    value = data
    try:
        for key in _split_path(path):
            step: Any = key
            try:
                step = int(key)
            except ValueError:
                pass
            value = value[step]
    except (TypeError, KeyError, IndexError):
        return default
    return value


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    keys = _split_path(path)
    for key in keys[:-1]:
        if not isinstance(data.get(key, {}), dict):
            raise TemplateError(f"job variable {path!r} runs through {key!r}, which is not a mapping")
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in extra.items():
        if isinstance(result.get(key), dict) and isinstance(value, dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def variable_defaults(base_job_template: Mapping[str, Any]) -> dict[str, Any]:
    """The non-null defaults of the template's variables (null defaults are dropped on purpose)."""
    properties = (base_job_template.get("variables") or {}).get("properties") or {}
    return {
        name: copy.deepcopy(spec["default"])
        for name, spec in properties.items()
        if isinstance(spec, dict) and spec.get("default") is not None
    }


# -- step 3: placeholders ---------------------------------------------------------------------------------------


def _placeholders(text: str) -> set[tuple[str, str]]:
    return {(full, name) for full, name in PLACEHOLDER.findall(text)}


def _kind(name: str) -> str:
    if name.startswith(BLOCK_PREFIX):
        return "block"
    if name.startswith(VARIABLE_PREFIX):
        return "variable"
    if name.startswith(ENV_PREFIX):
        return "env"
    return "standard"


def apply_values(template: Any, values: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Any:
    """Replace standard (and ``$ENV``) placeholders; NOTSET means "remove me" to the enclosing container."""
    if template is NOTSET or template is None or isinstance(template, (int, float)):
        return template
    if isinstance(template, str):
        found = _placeholders(template)
        if not found:
            return template
        if len(found) == 1:
            full, name = next(iter(found))
            if full == template and _kind(name) == "standard":
                return get_path(values, name)
        text = template
        for full, name in found:
            kind = _kind(name)
            if kind == "standard":
                value = get_path(values, name)
            elif kind == "env":
                value = (environ or {}).get(name.lstrip(ENV_PREFIX), NOTSET)
            else:
                continue
            text = text.replace(full, "" if value is NOTSET else str(value))
        return text
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, item in template.items():
            rendered = apply_values(item, values, environ)
            if rendered is not NOTSET:
                out[key] = rendered
        return out
    if isinstance(template, list):
        return [r for r in (apply_values(item, values, environ) for item in template) if r is not NOTSET]
    raise TemplateError(f"unexpected value of type {type(template).__name__} in job template")


# -- step 4 and 5: blocks and variables --------------------------------------------------------------------------


def _block_value(name: str, template: str, resolver: Resolver) -> Any:
    parts = name.replace(BLOCK_PREFIX, "").split(".", 2)
    if len(parts) < 2:
        raise TemplateError(
            f"invalid block placeholder {name!r}: expected prefect.blocks.<block-type-slug>.<block-document-name>"
        )
    slug, doc_name, *keypath = parts
    try:
        data = resolver.block_data_by_name(slug, doc_name)
    except ObjectNotFoundError as exc:
        raise TemplateError(f"block not found: {doc_name!r} of type {slug!r} (referenced in the job template)") from exc
    value: Any = data
    if len(data) == 1 and "value" in data:
        points_into_value = keypath and (keypath[0] == "value" or keypath[0].startswith(("value.", "value[")))
        if not points_into_value:
            data = value = data["value"]
    if keypath:
        value = get_path(data, keypath[0])
        if value is NOTSET:
            raise TemplateError(f"{template!r}: could not resolve {keypath[0]!r} in block {slug}/{doc_name}")
    return copy.deepcopy(value)


def resolve_blocks(template: Any, resolver: Resolver) -> Any:
    if isinstance(template, dict):
        ref = template.get("$ref")
        if "$ref" in template and not isinstance(ref, dict):  # Prefect's renderer fails on these too
            raise TemplateError(f"invalid block reference {ref!r}: expected {{'block_document_id': …}}")
        block_id = (ref or {}).get("block_document_id")
        if block_id:
            try:
                return copy.deepcopy(resolver.block_data_by_id(str(block_id)))
            except ObjectNotFoundError as exc:
                raise TemplateError(f"block not found: id {block_id} (referenced in the job template)") from exc
        return {key: resolve_blocks(value, resolver) for key, value in template.items()}
    if isinstance(template, list):
        return [resolve_blocks(item, resolver) for item in template]
    if isinstance(template, str):
        found = [(full, name) for full, name in _placeholders(template) if _kind(name) == "block"]
        if not found:
            return template
        if len(_placeholders(template)) == 1 and found[0][0] == template:
            return _block_value(found[0][1], template, resolver)
        text = template
        for full, name in found:
            value = _block_value(name, template, resolver)
            if isinstance(value, (dict, list)):
                raise TemplateError(
                    f"{template!r}: block placeholder {full!r} is a {type(value).__name__} and cannot be placed "
                    "inside text; reference a scalar attribute instead"
                )
            text = text.replace(full, str(value))
        return text
    return template


def resolve_variables(template: Any, resolver: Resolver) -> Any:
    cache: dict[str, Any] = {}

    def read(name: str) -> Any:
        key = name.replace(VARIABLE_PREFIX, "")
        if key not in cache:
            cache[key] = resolver.variable(key)
        return cache[key]

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, str):
            return node
        found = _placeholders(node)
        variables = [(full, name) for full, name in found if _kind(name) == "variable"]
        if not variables:
            return node
        if len(found) == 1 and variables[0][0] == node:
            value = read(variables[0][1])
            return "" if value is NOTSET else value
        text = node
        for full, name in variables:
            value = read(name)
            text = text.replace(full, "" if value is NOTSET else str(value))
        return text

    return walk(template)


# -- the whole pipeline --------------------------------------------------------------------------------------


def render_job_configuration(
    base_job_template: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    resolver: Resolver | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The job configuration for ``values`` (merged job variables), as Prefect's workers compute it.

    Without a ``resolver`` block references and ``prefect.variables`` placeholders are left as they are
    (useful where only plain fields are needed, e.g. the monitor reading ``max_run_time_seconds``).

    Raises:
        TemplateError: the template or the values do not render.

    Example:
        >>> tpl = {"job_configuration": {"command": "{{ command }}", "env": "{{ env }}"},
        ...        "variables": {"properties": {"command": {"default": "echo hi"}, "env": {}}}}
        >>> render_job_configuration(tpl, {"env": {"A": 1}})
        {'command': 'echo hi', 'env': {'A': '1'}}
    """
    if not isinstance(base_job_template, Mapping) or not isinstance(base_job_template.get("job_configuration"), dict):
        raise TemplateError("the work pool's base job template has no job_configuration")
    if not isinstance(values, Mapping):
        raise TemplateError(f"job variables must be a mapping, not {type(values).__name__}")
    config: dict[str, Any] = copy.deepcopy(base_job_template["job_configuration"])
    variables = variable_defaults(base_job_template)

    default_env = variables.get("env")
    if default_env:
        if isinstance(config.get("env"), dict) and isinstance(default_env, dict):
            config["env"] = config["env"] | default_env
        else:
            config["env"] = default_env

    expanded: dict[str, Any] = {}
    for key, value in values.items():
        if "." in key:
            _set_path(expanded, key, copy.deepcopy(value))
    for key, value in values.items():
        if "." not in key:
            if isinstance(expanded.get(key), dict) and isinstance(value, dict):
                expanded[key] = _deep_merge(expanded[key], value)
            else:
                expanded[key] = copy.deepcopy(value)
    variables.update(expanded)

    run_env = variables.get("env")
    if isinstance(config.get("env"), dict) and run_env:
        if not isinstance(run_env, dict):
            raise TemplateError(f"job variable 'env' must be a mapping, not {type(run_env).__name__}")
        config["env"] = config["env"] | run_env

    rendered = apply_values(config, variables, environ)
    if resolver is not None:
        rendered = resolve_blocks(rendered, resolver)
        rendered = resolve_variables(rendered, resolver)
    if "command" in rendered and not rendered["command"]:
        rendered["command"] = None  # an empty command means "the default", as in Prefect's job configuration
    env = rendered.get("env")
    if isinstance(env, dict):
        rendered["env"] = {key: None if value is None else str(value) for key, value in env.items()}
    elif env is not None and env is not NOTSET:
        raise TemplateError(f"'env' rendered to a {type(env).__name__}, expected a mapping of names to values")
    return rendered
