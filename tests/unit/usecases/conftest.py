"""Use-case tests run against FakePrefect and LatencyBackend: no server, no processes, time moved by a FixedClock."""

from __future__ import annotations

import pytest
from pushpool.clock import FixedClock
from pushpool.prefect_api.models import WorkPool
from pushpool.providers import base_job_template
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def fake(clock: FixedClock) -> FakePrefect:
    return FakePrefect(clock=clock)


@pytest.fixture
def backend(clock: FixedClock) -> LatencyBackend:
    return LatencyBackend(clock=clock)


@pytest.fixture
def settings() -> Settings:
    return Settings.of(
        prefect_api_url="http://127.0.0.1:1/api",
        webhook_tokens=("t",),
        submit_url="http://127.0.0.1:2/submit",
        pool_types=("process:push",),
    )


@pytest.fixture
def deps(settings: Settings, fake: FakePrefect, clock: FixedClock, backend: LatencyBackend) -> Deps:
    deps = Deps(settings=settings, orchestrator=fake, clock=clock)  # type: ignore[arg-type]
    deps._backends["process"] = backend
    return deps


@pytest.fixture
def pool(fake: FakePrefect) -> WorkPool:
    """A process:push pool with pushpool's base job template (and its default queue)."""
    return fake.add_pool(POOL, "process:push", base_job_template=base_job_template("process:push"))
