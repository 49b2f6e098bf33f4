"""The tests' Prefect servers' site customization (tests/prefect_server_site/sitecustomize.py) gives the answers
jsonschema gives: a valid schema is checked once, an invalid one is refused every time, instances are still checked."""

from __future__ import annotations

import jsonschema
import pytest
from jsonschema import validators
from jsonschema.exceptions import SchemaError, ValidationError

from tests.prefect_server_site.sitecustomize import remember_valid_schemas


def _counted_validator() -> tuple[type, list[object]]:
    draft = validators.Draft202012Validator
    cls = validators.create(meta_schema=draft.META_SCHEMA, validators=dict(draft.VALIDATORS))  # unregistered
    check = cls.check_schema.__func__
    calls: list[object] = []

    def counted(klass: type, schema: object, *args: object, **kwargs: object) -> None:
        calls.append(schema)
        check(klass, schema, *args, **kwargs)

    cls.check_schema = classmethod(counted)
    return remember_valid_schemas(cls), calls


def test_a_valid_schema_is_checked_once_and_an_invalid_one_every_time() -> None:
    cls, calls = _counted_validator()
    schema = {"type": "object", "properties": {"cpu": {"type": "integer"}}}
    cls.check_schema(schema)
    cls.check_schema({"properties": {"cpu": {"type": "integer"}}, "type": "object"})  # the same, keys in another order
    assert len(calls) == 1
    for _ in range(2):
        with pytest.raises(SchemaError, match="is not valid"):
            cls.check_schema({"type": 12})
    assert len(calls) == 3
    cls.check_schema(schema, format_checker=cls.FORMAT_CHECKER)  # another format checker: checked on its own
    assert len(calls) == 4


def test_instances_are_still_validated_against_a_remembered_schema() -> None:
    cls, _ = _counted_validator()
    schema = {"type": "object", "properties": {"cpu": {"type": "integer"}}}
    jsonschema.validate({"cpu": 1024}, schema, cls)
    with pytest.raises(ValidationError, match="is not of type 'integer'"):
        jsonschema.validate({"cpu": "a lot"}, schema, cls)
    with pytest.raises(SchemaError):
        jsonschema.validate({}, {"type": 12}, cls)
