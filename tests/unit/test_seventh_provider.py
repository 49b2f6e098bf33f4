"""Adding a seventh provider (issue 27): its folder (here ``tests/seventh/``: configuration, template, backend), one
registry line and one contract class — and pushpool provisions its pools, starts their runs' jobs with their job
variables and reconciles them, on the fake orchestrator, with no use-case, settings field or CLI branch for it."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest
from pushpool import providers
from pushpool.clock import FixedClock
from pushpool.prefect_api.models import StateType
from pushpool.providers import Provider, register, unregister
from pushpool.providers.base import JobHandle, JobSpec
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.monitor import tick
from pushpool.usecases.provision import provision_pool
from pushpool.usecases.submit import SubmitOutcome, submit_run

from tests.contract.contract import BackendContract
from tests.contract.test_fake_backend import FakeDriver
from tests.fake_prefect import FakePrefect
from tests.seventh.backend import SeventhBackend
from tests.seventh.config import SeventhJobConfig

SEVENTH = Provider(  # the one registry line (an entry of providers.PROVIDERS, for a provider inside the package)
    name="seventh",
    templates={"seventh:push": "tests.seventh.template:base_job_template"},
    backend="tests.seventh.backend:SeventhBackend",
    config="tests.seventh.config:SeventhJobConfig",
)


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    register(SEVENTH)
    yield
    unregister(SEVENTH.name)


# -- the contract class ---------------------------------------------------------------------------------------------


class SeventhDriver(FakeDriver):
    """The in-memory control plane's driver (its backend is the fake's), with the seventh provider's jobs."""

    def spec(self, *, location: str = "default") -> JobSpec:
        return dataclasses.replace(super().spec(location=location), config=SeventhJobConfig(machine="large"))

    def unknown_handle(self) -> JobHandle:
        return JobHandle("seventh", f"fake-{uuid.uuid4()}")

    def malformed_handle(self) -> JobHandle:
        return JobHandle("seventh", "")


class TestSeventhBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> SeventhBackend:
        return providers.provider_named("seventh").create_backend()  # type: ignore[return-value]

    @pytest.fixture
    def driver(self, backend: SeventhBackend) -> SeventhDriver:
        return SeventhDriver(backend)


# -- pushpool's use-cases on it -------------------------------------------------------------------------------------


@pytest.fixture
def world() -> tuple[Deps, FakePrefect]:
    clock = FixedClock()
    fake = FakePrefect(clock=clock)
    settings = Settings.of(
        prefect_api_url="http://127.0.0.1:1/api", webhook_tokens=("t",), submit_url="http://127.0.0.1:2/submit"
    )
    return Deps(settings=settings, orchestrator=fake, clock=clock), fake  # type: ignore[arg-type]


def test_its_pools_are_provisioned_with_its_template_and_served(world: tuple[Deps, FakePrefect]) -> None:
    deps, fake = world
    assert "seventh:push" in deps.pool_types  # served by default: its SDK (none) is installed
    provision_pool(deps, name="seven", type_name="seventh:push")
    pool = fake.read_work_pool("seven")
    assert pool.type == "seventh:push"
    assert pool.base_job_template["job_configuration"]["machine"] == "{{ machine }}"
    assert fake.find_automations("pushpool-seven")  # the automation that calls submit


def test_a_run_gets_a_job_with_its_job_variables_and_the_monitor_judges_it(world: tuple[Deps, FakePrefect]) -> None:
    deps, fake = world
    provision_pool(deps, name="seven", type_name="seventh:push")
    deployment = fake.add_deployment("seven", job_variables={"machine": "large"})
    run = fake.read_flow_run(fake.add_run(deployment))

    outcome = submit_run(deps, run, fake.read_work_pool("seven"))
    assert outcome.outcome == SubmitOutcome.SUBMITTED, outcome
    backend = deps.backend("seventh")
    assert isinstance(backend, SeventhBackend)
    handle = JobHandle("seventh", outcome.job_id)
    assert backend.machines[handle.id] == "large"
    assert fake.read_flow_run(run.id).infrastructure_pid == outcome.job_id

    backend.exit(handle, 3, ["out of cheese"])
    tick(deps)
    crashed = fake.read_flow_run(run.id)
    assert crashed.state_type is StateType.CRASHED
    assert "out of cheese" in (crashed.state.message or "")


def test_a_job_variable_outside_its_template_crashes_the_run_with_the_reason(world: tuple[Deps, FakePrefect]) -> None:
    deps, fake = world
    provision_pool(deps, name="seven", type_name="seventh:push")
    run = fake.read_flow_run(fake.add_run(fake.add_deployment("seven", job_variables={"machine": 7})))
    outcome = submit_run(deps, run, fake.read_work_pool("seven"))
    assert outcome.outcome == SubmitOutcome.CRASHED
    assert "machine" in fake.read_flow_run(run.id).state.message
