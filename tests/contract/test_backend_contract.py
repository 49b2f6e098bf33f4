"""The contract every backend keeps (backends/base.py). Each backend's test class subclasses BackendContract and
says how to build the backend and a job spec that runs for a while, exits 0, or exits non-zero."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pushpool.backends.base import Backend, JobHandle, JobSpec, JobState
from pushpool.backends.process import ProcessBackend
from pushpool.errors import BackendError, PushpoolError


class BackendContract:
    """Subclasses provide `backend` and `spec(kind)` fixtures/methods."""

    def make_backend(self, tmp_path: Path) -> Backend:
        raise NotImplementedError

    def spec(self, kind: str) -> JobSpec:
        """kind: "long" (runs until stopped), "ok" (exits 0 quickly), "fail" (exits 3 after printing)."""
        raise NotImplementedError

    def wait_final(self, backend: Backend, handle: JobHandle, timeout: float = 20) -> JobState:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = backend.status([handle])[handle.id].state
            if state.is_final:
                return state
            time.sleep(0.05)
        return backend.status([handle])[handle.id].state

    def test_is_a_backend(self, tmp_path: Path) -> None:
        assert isinstance(self.make_backend(tmp_path), Backend)

    def test_submit_is_idempotent_per_run(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        spec = self.spec("long")
        with ThreadPoolExecutor(8) as ex:
            handles = set(ex.map(lambda _: backend.submit(spec), range(8)))
        assert len(handles) == 1
        handle = handles.pop()
        assert backend.find(spec.run_id, spec.attempt) == handle
        assert backend.find(spec.run_id, "another-attempt") is None  # a new attempt gets a new job
        backend.cancel(handle, grace_seconds=2)

    def test_find_unknown_run_is_none(self, tmp_path: Path) -> None:
        assert self.make_backend(tmp_path).find(str(uuid.uuid4()), str(uuid.uuid4())) is None

    def test_status_of_many_jobs_and_of_unknown_ones(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        ok, fail = backend.submit(self.spec("ok")), backend.submit(self.spec("fail"))
        assert self.wait_final(backend, ok) is JobState.SUCCEEDED
        assert self.wait_final(backend, fail) is JobState.FAILED
        unknown = JobHandle(backend.name, self.unknown_id(backend))
        statuses = backend.status([ok, fail, unknown])
        assert set(statuses) == {ok.id, fail.id, unknown.id}
        assert all(isinstance(s.state, JobState) for s in statuses.values())
        assert statuses[unknown.id].state is JobState.MISSING
        assert statuses[fail.id].exit_code == 3

    def test_cancel_stops_the_job_and_is_idempotent(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        handle = backend.submit(self.spec("long"))
        assert backend.status([handle])[handle.id].state in (JobState.PENDING, JobState.RUNNING)
        backend.cancel(handle, grace_seconds=2)
        assert self.wait_final(backend, handle) is JobState.STOPPED
        backend.cancel(handle, grace_seconds=2)  # already stopped: fine
        backend.cancel(JobHandle(backend.name, self.unknown_id(backend)), grace_seconds=1)  # gone: fine

    def test_logs_return_the_last_lines(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        handle = backend.submit(self.spec("fail"))
        self.wait_final(backend, handle)
        assert any("about to fail" in line for line in backend.logs(handle, lines=10))
        assert backend.logs(handle, lines=0) == []

    def test_failures_surface_as_pushpool_errors(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        bad = self.spec("ok")
        bad = JobSpec(**{**bad.__dict__, "command": "/no/such/program --x"})
        try:
            handle = backend.submit(bad)
        except PushpoolError:
            return
        assert self.wait_final(backend, handle) is JobState.FAILED

    def unknown_id(self, backend: Backend) -> str:
        raise NotImplementedError


class TestProcessBackend(BackendContract):
    def make_backend(self, tmp_path: Path) -> ProcessBackend:
        return ProcessBackend(tmp_path / "jobs")

    def spec(self, kind: str) -> JobSpec:
        command = {
            "long": "sleep 60",
            "ok": "true",
            "fail": "sh -c 'echo about to fail; exit 3'",
        }[kind]
        return JobSpec(
            run_id=str(uuid.uuid4()),
            attempt=str(uuid.uuid4()),
            pool_name="p",
            name=kind,
            command=command,
            env={"A": "1"},
            labels={},
            config={},
            max_run_time_seconds=60,
            secret_env={"PREFECT_API_KEY": "k"},
        )

    def unknown_id(self, backend: Backend) -> str:
        return f"{backend.host}::{uuid.uuid4()}_{uuid.uuid4()}"  # type: ignore[attr-defined]

    def test_a_job_of_another_host_is_unknown_not_missing(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        status = backend.status([JobHandle("process", f"elsewhere::{uuid.uuid4()}")])
        assert next(iter(status.values())).state is JobState.UNKNOWN

    def test_sigterm_ignoring_job_is_killed_after_grace(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        spec = JobSpec(**{**self.spec("long").__dict__, "command": "sh -c 'trap \"\" TERM; sleep 60'"})
        handle = backend.submit(spec)
        time.sleep(0.5)
        started = time.monotonic()
        backend.cancel(handle, grace_seconds=1)
        assert time.monotonic() - started < 10
        assert backend.status([handle])[handle.id].state is JobState.STOPPED

    def test_secrets_are_not_written_to_disk(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        handle = backend.submit(self.spec("ok"))
        self.wait_final(backend, handle)
        for path in (tmp_path / "jobs").rglob("*"):
            if path.is_file():
                assert b"PREFECT_API_KEY" not in path.read_bytes()

    def test_invalid_run_ids_are_refused(self, tmp_path: Path) -> None:
        backend = self.make_backend(tmp_path)
        with pytest.raises(BackendError):
            backend.submit(JobSpec(**{**self.spec("ok").__dict__, "run_id": "../escape", "attempt": "/x"}))


class TestLatencyFakeBackend(BackendContract):
    """The scale bench's fake (tests/fakes.py) keeps the same contract as the real backends."""

    def make_backend(self, tmp_path: Path) -> Backend:
        from tests.fakes import LatencyBackend

        return LatencyBackend(latency=0.001)

    def spec(self, kind: str) -> JobSpec:
        return TestProcessBackend.spec(self, kind)  # type: ignore[arg-type]

    def unknown_id(self, backend: Backend) -> str:
        return f"fake-{uuid.uuid4()}"

    def test_status_is_answered_in_batches(self, tmp_path: Path) -> None:
        from tests.fakes import LatencyBackend

        backend = LatencyBackend(batch=100)
        handles = [backend.seed(str(uuid.uuid4()), "a") for _ in range(250)]
        statuses = backend.status(handles)
        assert backend.calls["status"] == 3
        assert {s.state for s in statuses.values()} == {JobState.RUNNING}
