"""Template rendering rules that need no server (the server-backed comparison with Prefect is in integration)."""

from __future__ import annotations

import pytest
from pushpool.errors import TemplateError, UnsupportedPoolError
from pushpool.providers import base_job_template, provider_for_pool_type
from pushpool.templates.render import NOTSET, apply_values, get_path, render_job_configuration
from pushpool.usecases.job_spec import template_environ


def test_a_lone_placeholder_keeps_its_type_and_embedded_ones_are_stringified() -> None:
    values = {"n": 3, "d": {"a": [1, 2]}, "s": "x"}
    assert apply_values("{{ n }}", values) == 3
    assert apply_values("{{ d }}", values) == {"a": [1, 2]}
    assert apply_values("n={{ n }} s={{s}}", values) == "n=3 s=x"
    assert apply_values("{{ d.a[1] }}", values) == 2


def test_unset_values_remove_keys_and_list_items() -> None:
    assert apply_values({"a": "{{ missing }}", "b": 1}, {}) == {"b": 1}
    assert apply_values(["{{ missing }}", "keep"], {}) == ["keep"]
    assert apply_values("pre-{{ missing }}-post", {}) == "pre--post"
    assert apply_values("{{ missing }}", {}) is NOTSET


def test_get_path_walks_dicts_and_lists() -> None:
    assert get_path({"a": [{"b": 1}]}, "a[0].b") == 1
    assert get_path({"a": 1}, "a.b") is NOTSET


def test_env_placeholders_read_only_the_given_environment() -> None:
    assert apply_values("{{ $HOME }}", {}, {"HOME": "/h"}) == "/h"
    assert apply_values("{{ $HOME }}", {}, {}) == ""


def test_template_environment_is_an_allowlist() -> None:
    """`{{ $NAME }}` reads what a job may see: the allowlist and the operator's passthrough, nothing else — not even a
    variable whose name does not look secret (a denylist of names would miss AZURE_STORAGE_CONNECTION_STRING)."""
    environ = {
        "HOME": "/h",
        "LC_ALL": "C",
        "PUSHPOOL_WEBHOOK_TOKEN": "t",
        "PREFECT_API_KEY": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AZURE_STORAGE_CONNECTION_STRING": "c",
        "DATABASE_URL": "postgres://u:p@db/x",
        "REGION": "eu",
    }
    assert template_environ(environ) == {"HOME": "/h", "LC_ALL": "C"}
    assert template_environ(environ, ("REGION",)) == {"HOME": "/h", "LC_ALL": "C", "REGION": "eu"}


def test_bad_templates_raise_template_errors() -> None:
    with pytest.raises(TemplateError):
        render_job_configuration({"variables": {}}, {})
    with pytest.raises(TemplateError):
        render_job_configuration({"job_configuration": {"env": {"A": "1"}}, "variables": {}}, {"env": "not-a-dict"})
    with pytest.raises(TemplateError):
        render_job_configuration({"job_configuration": {"x": {"$ref": "oops"}}, "variables": {}}, {}, resolver=object())


def test_pool_types() -> None:
    assert provider_for_pool_type("process:push").name == "process"
    with pytest.raises(UnsupportedPoolError, match="not a push pool"):
        provider_for_pool_type("process")
    with pytest.raises(UnsupportedPoolError, match="unknown push pool type"):
        provider_for_pool_type("nomad:push")
    template = base_job_template("process:push")
    assert template["variables"]["properties"]["max_run_time_seconds"]["default"] == 86400
    assert render_job_configuration(template, {})["max_run_time_seconds"] == 86400
