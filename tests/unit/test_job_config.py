"""Typed job configurations at the boundary: a value that does not validate is named, never quoted; an AWS client
that cannot even be made is a BackendError like every other AWS failure."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pushpool.errors import BackendError, TemplateError
from pushpool.prefect_api.models import WorkPool
from pushpool.providers.base import JobSpec
from pushpool.providers.ecs.backend import EcsBackend
from pushpool.providers.ecs.config import EcsJobConfig
from pushpool.usecases.job_spec import typed_config


def test_a_value_that_does_not_validate_is_named_but_never_quoted() -> None:
    """A Secret block holding JSON resolves to a dict: the crash message says where, not what the secret is."""
    pool = WorkPool(id="p", name="p", type="process:push")
    with pytest.raises(TemplateError) as err:
        typed_config(pool, {"env": {"DB": {"user": "u", "password": "hunter2"}}})
    assert "env.DB" in err.value.message and "hunter2" not in err.value.message


def test_an_aws_client_without_a_region_is_a_backend_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    spec = JobSpec(
        run_id=str(uuid.uuid4()),
        attempt=str(uuid.uuid4()),
        pool_name="p",
        name="n",
        command=("prefect", "flow-run", "execute"),
        env={},
        labels={},
        config=EcsJobConfig(cluster="c"),
    )
    with pytest.raises(BackendError, match="no AWS region"):
        EcsBackend().find(spec)
