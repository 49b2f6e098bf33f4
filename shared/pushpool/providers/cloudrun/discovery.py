"""A Cloud Run Job body judged against Google's published ``run.v2`` discovery document, before it is sent.

The job is created over REST with the body as JSON (``backend.py``), not through ``google-cloud-run``'s protobuf
messages: a message class knows only the fields of its release, so a pool template using a field the API gained later
(``volumes[].filestore``, ``template.delayExecution`` …) would be refused although Cloud Run — and Prefect's worker,
which sends JSON through a discovery client — accepts it. The document is the one google-api-python-client ships
(``discovery_cache/documents/run.v2.json``, updated with each of its releases): what the current API accepts. A body
it does not describe (an unknown field, a value of the wrong type, an enum value it does not list) is refused naming
the place, before any call.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

JOB_SCHEMA = "GoogleCloudRunV2Job"
_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s\Z")
_INTEGER = re.compile(r"^-?\d+\Z")


@functools.cache
def run_v2_document() -> Mapping[str, Any]:
    """The run.v2 discovery document google-api-python-client ships."""
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "run.v2.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def revision() -> str:
    return str(run_v2_document().get("revision", "?"))


def problems(value: Any, schema: str = JOB_SCHEMA, doc: Mapping[str, Any] | None = None) -> list[str]:
    """Where ``value`` is not a ``schema`` of the document (empty: it is one)."""
    return _object(doc or run_v2_document(), schema, value, "")


def _object(doc: Mapping[str, Any], schema: str, value: Any, path: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{path or schema}: expected an object, got {type(value).__name__}"]
    properties = doc["schemas"][schema].get("properties", {})
    found: list[str] = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in properties:
            found.append(f"{where}: not a field of {schema}")
        else:
            found += _value(doc, properties[key], item, where)
    return found


def _value(doc: Mapping[str, Any], prop: Mapping[str, Any], value: Any, where: str) -> list[str]:
    if "$ref" in prop:
        return _object(doc, prop["$ref"], value, where)
    kind = prop.get("type")
    if kind == "string":
        if "enum" in prop:
            ok = value in prop["enum"] or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
            return [] if ok else [f"{where}: {value!r} is not one of {', '.join(prop['enum'])}"]
        if prop.get("format") in ("int64", "uint64", "int32"):
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, str) and bool(_INTEGER.match(value))
            )
            return [] if ok else [f"{where}: expected an integer, got {value!r}"]
        if prop.get("format") == "google-duration":
            ok = isinstance(value, str) and bool(_DURATION.match(value))
            return [] if ok else [f"{where}: expected a duration such as '600s', got {value!r}"]
        return [] if isinstance(value, str) else [f"{where}: expected a string, got {value!r}"]
    if kind == "integer":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and bool(_INTEGER.match(value))
        )
        return [] if ok else [f"{where}: expected an integer, got {value!r}"]
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a number, got {value!r}"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: expected a boolean, got {value!r}"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [e for i, item in enumerate(value) for e in _value(doc, prop["items"], item, f"{where}[{i}]")]
    if kind == "object":
        if not isinstance(value, Mapping):
            return [f"{where}: expected an object, got {value!r}"]
        inner = prop.get("additionalProperties")
        return [e for k, v in value.items() for e in (_value(doc, inner, v, f"{where}.{k}") if inner else [])]
    return []
