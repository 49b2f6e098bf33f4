"""Loaded by the tests' Prefect servers only (``tests.helpers.start_server`` puts this folder first on their
``PYTHONPATH``; nothing of pushpool's runs with it): jsonschema's ``check_schema`` remembers the schemas it found valid.

Prefect checks a work pool's job-variables schema against JSON Schema's meta-schema on every pool, deployment and run
made from a deployment, twice for a run (``is_valid_schema``, then ``jsonschema.validate``). In a full ``make test``
that was about a fifth of the session servers' CPU (py-spy, 2026-12-07). ``check_schema`` is a function of the schema
and the format checker alone, so a schema found valid once is valid again: the answer is the same, only sooner. A
schema found invalid is checked again each time (Prefect's error message is made from a fresh exception).
"""

from __future__ import annotations

import json
from typing import Any


def remember_valid_schemas(validator_class: type) -> type:
    """``validator_class`` with a ``check_schema`` that checks each distinct valid schema once."""
    check = validator_class.check_schema.__func__
    valid: set[tuple[str, tuple[int, ...]]] = set()

    def check_schema(cls: type, schema: Any, *args: Any, **kwargs: Any) -> None:
        try:  # the format checker (positional or not) by identity: Prefect passes the same one each time
            key = (json.dumps(schema, sort_keys=True), tuple(map(id, (*args, *kwargs.values()))))
        except (TypeError, ValueError):  # not JSON: not remembered
            check(cls, schema, *args, **kwargs)
            return
        if key not in valid:
            check(cls, schema, *args, **kwargs)  # raises SchemaError for an invalid schema
            valid.add(key)

    validator_class.check_schema = classmethod(check_schema)
    return validator_class


def _install() -> None:
    try:
        from jsonschema import validators
    except ImportError:  # an interpreter without jsonschema: nothing to speed up
        return
    create = validators.create

    def create_remembering(*args: Any, **kwargs: Any) -> type:
        return remember_valid_schemas(create(*args, **kwargs))

    # Prefect's validator class is made with ``create`` when Prefect is imported, after this runs.
    validators.create = create_remembering


if __name__ == "sitecustomize":  # as the server's site customization; not when a test imports the function
    _install()
