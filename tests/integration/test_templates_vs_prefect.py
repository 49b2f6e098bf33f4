"""pushpool's template rendering against Prefect's own implementation, on Prefect's own default templates.

Prefect's `BaseJobConfiguration.from_template_and_values` (with a subclass that keeps every rendered field) is the
oracle; block documents and variables live on the real test server and are resolved by both implementations.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pushpool.errors import TemplateError
from pushpool.prefect_api.client import PrefectClient
from pushpool.providers import base_job_template
from pushpool.templates.render import merge_job_variables, render_job_configuration
from pushpool.usecases.job_spec import OrchestratorResolver

from tests.helpers import PrefectHelper

pytestmark = pytest.mark.integration

TEMPLATES = json.loads((Path(__file__).parent.parent / "data" / "prefect-default-job-templates.json").read_text())
BASE_FIELDS = {"command": None, "env": {}, "labels": {}, "name": None}


@pytest.fixture(scope="module")
def oracle(prefect_api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.base import BaseJobConfiguration
    from pydantic import ConfigDict

    class AnyJobConfiguration(BaseJobConfiguration):
        model_config = ConfigDict(extra="allow")

    # Entered once for the module: building Prefect's settings takes ~0.5 s, and a client (its TLS context, its
    # connection) about 30 ms, more than a render (the property test renders 150 times). One event loop, one client.
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        loop = asyncio.new_event_loop()
        client = loop.run_until_complete(get_client().__aenter__())

        def render(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
            async def go() -> dict[str, Any]:
                config = await AnyJobConfiguration.from_template_and_values(
                    copy.deepcopy(template), copy.deepcopy(values), client=client
                )
                return config.model_dump()

            return loop.run_until_complete(go())  # the task runs in a copy of this context: the settings above

        try:
            yield render
        finally:
            loop.run_until_complete(client.__aexit__(None, None, None))
            loop.close()


@pytest.fixture(scope="module")
def ours(prefect_api: str):
    client = PrefectClient(prefect_api)

    def render(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        rendered = render_job_configuration(
            template, values, resolver=OrchestratorResolver(client), environ=dict(os.environ)
        )
        return {**BASE_FIELDS, **rendered}

    yield render
    client.close()


@pytest.fixture(scope="module")
def blocks(prefect_api: str) -> dict[str, str]:
    """A secret block, a webhook block (nested data) and a variable on the server."""
    helper = PrefectHelper(prefect_api, Path("."))
    suffix = helper.unique("t")
    made: dict[str, str] = {"suffix": suffix}
    webhook = {"method": "POST", "url": "http://127.0.0.1:9/x", "headers": {"region": "eu-west-1"}}
    for slug, data in (("secret", {"value": "s3cr3t"}), ("webhook", webhook)):
        type_id = helper.json("GET", f"/block_types/slug/{slug}")["id"]
        schema_id = helper.json(
            "POST", "/block_schemas/filter", json={"block_schemas": {"block_type_id": {"any_": [type_id]}}, "limit": 1}
        )[0]["id"]
        doc = helper.json(
            "POST",
            "/block_documents/",
            json={"name": f"{slug}-{suffix}", "data": data, "block_type_id": type_id, "block_schema_id": schema_id},
        )
        made[slug] = doc["id"]
    helper.json("POST", "/variables/", json={"name": f"var_{suffix}".replace("-", "_"), "value": "from-variable"})
    made["variable"] = f"var_{suffix}".replace("-", "_")
    helper.close()
    return made


def _values(blocks: dict[str, str]) -> list[dict[str, Any]]:
    s, var = blocks["suffix"], blocks["variable"]
    return [
        {},
        {"image": "repo/img:1", "cpu": 512, "memory": 1024, "command": "python -m app", "name": "job-{{ x }}"},
        {"env": {"A": "1", "B": None, "N": 5}, "labels": {"team": "data"}},
        {"env.FOO": "dotted", "env": {"BAR": "nested"}, "labels.k": "v"},
        {"env.FOO": "dotted", "env": {"FOO": "nested wins"}},
        {
            "env": {
                "TOKEN": f"{{{{ prefect.blocks.secret.secret-{s} }}}}",
                "REGION": f"{{{{ prefect.blocks.webhook.webhook-{s}.headers.region }}}}",
                "VAR": f"{{{{ prefect.variables.{var} }}}}",
                "INLINE": f"pre-{{{{ prefect.variables.{var} }}}}-post",
                "MISSING": "{{ prefect.variables.no_such_variable }}",
            },
            "aws_credentials": {"$ref": {"block_document_id": blocks["webhook"]}},
            "credentials": {"$ref": {"block_document_id": blocks["secret"]}},
        },
        {"command": "echo {{ $HOME }}"},
        {"network_configuration": {"awsvpcConfiguration": {"subnets": ["s-1"], "assignPublicIp": "DISABLED"}}},
        {"max_retries": 3, "timeout": 86400, "keep_job": True, "args": ["--x", "1"]},
        {"cpu": 2.5, "memory": 4.0, "subnet_ids": ["a", "b"], "stream_output": False},
    ]


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_prefect_default_templates_render_the_same(kind: str, oracle, ours, blocks) -> None:
    template = TEMPLATES[kind]
    for values in _values(blocks):
        assert ours(template, values) == oracle(template, values), values


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_pool_env_defaults_merge_key_wise_like_prefect(kind: str, oracle, ours) -> None:
    template = copy.deepcopy(TEMPLATES[kind])
    template["variables"]["properties"]["env"]["default"] = {"POOL": "p", "SHARED": "pool"}
    template["job_configuration"]["command"] = "run {{ $HOME }} {{ image }}"
    for values in ({}, {"env": {"SHARED": "deployment", "D": "d"}}, {"env.SHARED": "dot"}):
        assert ours(template, values) == oracle(template, values)


def test_pushpool_templates_render_the_same(oracle, ours) -> None:
    template = base_job_template("process:push")
    for values in ({}, {"max_run_time_seconds": 60, "env": {"X": "1"}, "working_dir": "/tmp"}):
        assert ours(template, values) == oracle(template, values)
    template = base_job_template("azure-container-instance:push")
    for values in ({}, {"resource_group_name": "rg", "cpu": 2, "image": "i:1", "location": "westeurope"}):
        assert ours(template, values) == oracle(template, values)


def test_deployment_and_flow_run_variables_merge_like_prefect_workers() -> None:
    merged = merge_job_variables({"env": {"A": "dep", "B": "dep"}, "image": "dep"}, {"env": {"B": "run"}, "cpu": 1})
    assert merged == {"env": {"A": "dep", "B": "run"}, "image": "dep", "cpu": 1}
    # Without a deployment env mapping the run's env replaces it, as in resolve_for_flow_run.
    assert merge_job_variables({"env": None}, {"env": {"B": "run"}}) == {"env": {"B": "run"}}


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.text(max_size=12),
    st.sampled_from(["{{ image }}", "x{{ cpu }}"]),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(TEMPLATES)), data=st.data())
def test_random_job_variables_render_the_same(kind: str, data: st.DataObject, oracle, ours) -> None:
    template = TEMPLATES[kind]
    names = sorted(template["variables"]["properties"])
    keys = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=5))
    typed = {
        "env": st.dictionaries(st.text(min_size=1, max_size=5), st.none() | st.text(max_size=5) | st.integers()),
        "labels": st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
        "command": st.none() | st.text(max_size=10),
        "name": st.none() | st.text(max_size=10),
    }
    values = {k: data.draw(typed.get(k, _value)) for k in keys}
    try:
        expected = oracle(template, values)
    except Exception:  # noqa: BLE001 - Prefect's own renderer cannot render it (e.g. a value {"$ref": None})
        with pytest.raises(TemplateError):  # pushpool refuses it with a reason instead (the run is Crashed, not stuck)
            ours(template, values)
        return
    assert ours(template, values) == expected


def test_a_value_prefect_itself_cannot_render_is_a_template_error(oracle, ours) -> None:
    """Found by the property above: Prefect's renderer raises AttributeError on {"$ref": None}; pushpool answers
    with a TemplateError the run is crashed with."""
    template, values = TEMPLATES["ecs"], {"env": {"A": "1"}, "execution_role_arn": {"$ref": None}}
    with pytest.raises(AttributeError):
        oracle(template, values)
    with pytest.raises(TemplateError):
        ours(template, values)
