"""The in-memory backend of the use-case tests and the scale bench keeps the same contract as the real backends."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from pushpool.providers.base import JobHandle, JobSpec, JobState
from pushpool.providers.process.config import ProcessJobConfig

from tests.contract.contract import BackendContract, contract_spec
from tests.fakes import LatencyBackend


class FakeDriver:
    supports_locations = False

    def __init__(self, backend: LatencyBackend) -> None:
        self.backend = backend

    def spec(self, *, location: str = "default") -> JobSpec:
        return contract_spec(ProcessJobConfig(), env={}, labels={})

    def jobs_of(self, spec: JobSpec) -> int:
        return self.backend.jobs_of(spec)

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        self.backend.exit(handle, code, lines)

    def vanish(self, handle: JobHandle) -> None:
        self.backend.vanish(handle)

    def unknown_handle(self) -> JobHandle:
        return JobHandle("fake", f"fake-{uuid.uuid4()}")

    def malformed_handle(self) -> JobHandle:
        return JobHandle("fake", "")

    def refused_spec(self) -> JobSpec:
        return dataclasses.replace(self.spec(), command=("/no/such/program",))

    def sent(self, handle: JobHandle) -> str:
        return self.backend.jobs[handle.id].sent


class TestLatencyFakeBackend(BackendContract):
    registered = False

    @pytest.fixture
    def backend(self) -> LatencyBackend:
        return LatencyBackend(latency=0.001)

    @pytest.fixture
    def driver(self, backend: LatencyBackend) -> FakeDriver:
        return FakeDriver(backend)

    def test_status_is_answered_in_batches(self) -> None:
        backend = LatencyBackend(batch=100)
        handles = [backend.seed(str(uuid.uuid4()), "a") for _ in range(250)]
        statuses = backend.status(handles)
        assert backend.calls["status"] == 3
        assert {s.state for s in statuses.values()} == {JobState.RUNNING}
