"""The contract every backend and every fake keeps (providers/base.py), as one suite.

Each backend's test module subclasses :class:`BackendContract` and gives it a :class:`JobDriver`: the part that plays
the provider's control plane. The driver makes a job start, exit 0, exit non-zero with output, or vanish — for the
process backend by signalling the real process, for an emulated cloud by changing the emulator's state — and the
contract checks what the adapter reports, finds, stops and cleans up. No check assumes a command really runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import pytest
from pushpool import providers
from pushpool.errors import BackendError, PushpoolError
from pushpool.providers.base import Backend, JobConfig, JobHandle, JobSpec, JobState

SECRET = "pnu_contract_secret_0123456789"


def contract_spec(config: JobConfig, **fields: Any) -> JobSpec:
    """A new attempt's job as the drivers make it (``JobDriver.spec``): fresh run and attempt ids, Prefect's flow-run
    command, the run's id in env and labels, SECRET as the API key; ``config`` is the provider's, ``fields`` replace
    any of the others."""
    spec = JobSpec(
        run_id=str(uuid.uuid4()),
        attempt=str(uuid.uuid4()),
        pool_name="contract",
        name="contract",
        command=("prefect", "flow-run", "execute"),
        env={"PREFECT__FLOW_RUN_ID": "x"},
        labels={"prefect.io/flow-run-id": "x"},
        config=config,
        secret_env={"PREFECT_API_KEY": SECRET},
    )
    return dataclasses.replace(spec, **fields)


class JobDriver(Protocol):
    """The provider's control plane, as far as the contract needs it."""

    supports_locations: bool  # jobs can be placed somewhere other than the default (a cluster, region, project …)

    def spec(self, *, location: str = "default") -> JobSpec:
        """A new attempt's job (secret_env carries SECRET). ``location``: "default", "other" (a second place that
        exists), or "nowhere" (a place that does not exist)."""

    def jobs_of(self, spec: JobSpec) -> int:
        """How many jobs the provider holds for ``spec``'s attempt, counted on the provider's side."""

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        """Make the job print ``lines`` and end with ``code``."""

    def vanish(self, handle: JobHandle) -> None:
        """Make the job disappear without a trace of how it ended."""

    def unknown_handle(self) -> JobHandle:
        """A well-formed handle of a job that does not exist."""

    def malformed_handle(self) -> JobHandle:
        """A handle this backend could never have issued."""

    def refused_spec(self) -> JobSpec:
        """A job the provider refuses (a missing image, task definition, program …)."""

    def sent(self, handle: JobHandle) -> str:
        """Everything the provider holds about the job as text (definitions, overrides, files), to look for secrets."""


class BackendContract:
    """Subclasses define ``backend`` and ``driver`` fixtures; ``registered`` says whether a provider entry names it."""

    registered = True
    # The provider tells when it accepted a job (JobStatus.accepted_at); Coiled does not: the monitor counts from the
    # run's claim then (usecases/reconcile.py).
    acceptance_time = True

    def wait(self, backend: Backend, handle: JobHandle, predicate, timeout: float = 20.0) -> JobState:
        deadline = time.monotonic() + timeout
        state = backend.status([handle])[handle.id].state
        while not predicate(state) and time.monotonic() < deadline:
            time.sleep(0.05)
            state = backend.status([handle])[handle.id].state
        return state

    def final(self, backend: Backend, handle: JobHandle) -> JobState:
        return self.wait(backend, handle, lambda s: s.is_final)

    # -- shape ----------------------------------------------------------------------------------------------------

    def test_is_a_backend_with_a_typed_configuration(self, backend: Backend, driver: JobDriver) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(driver.spec().config, JobConfig)
        assert backend.start_timeout_seconds > 0
        if self.registered:
            provider = next(p for p in providers.PROVIDERS if p.name == backend.name)
            assert type(backend) is type(provider.create_backend())
            assert type(driver.spec().config) is provider.config_model()

    # -- submit and find ---------------------------------------------------------------------------------------

    @pytest.mark.parametrize("new_attempt", [False, True], ids=["retried", "from-the-claim"])
    def test_concurrent_submits_of_one_attempt_make_one_job(
        self, backend: Backend, driver: JobDriver, new_attempt: bool
    ) -> None:
        spec = dataclasses.replace(driver.spec(), new_attempt=new_attempt)
        with ThreadPoolExecutor(8) as pool:
            handles = set(pool.map(lambda _: backend.submit(spec), range(8)))
        assert len(handles) == 1
        assert driver.jobs_of(spec) == 1
        assert backend.submit(dataclasses.replace(spec, new_attempt=False)) == handles.pop()  # a later retry finds it
        assert driver.jobs_of(spec) == 1

    def test_find_looks_where_the_runs_own_configuration_put_the_job(self, backend: Backend, driver: JobDriver) -> None:
        spec = driver.spec(location="other" if driver.supports_locations else "default")
        handle = backend.submit(spec)
        assert backend.find(spec) == handle
        assert backend.find(dataclasses.replace(spec, attempt=spec.attempt + "-next")) is None  # a new attempt
        if driver.supports_locations:  # the same attempt looked for in the default place: not there
            elsewhere = driver.spec(location="default")
            assert backend.find(dataclasses.replace(elsewhere, run_id=spec.run_id, attempt=spec.attempt)) is None

    def test_find_where_nothing_exists_answers_none(self, backend: Backend, driver: JobDriver) -> None:
        assert backend.find(driver.spec()) is None
        assert backend.find(driver.spec(location="nowhere")) is None

    # -- status ----------------------------------------------------------------------------------------------------

    def test_status_reports_what_each_job_did_and_one_bad_handle_hides_nothing(
        self, backend: Backend, driver: JobDriver
    ) -> None:
        running, ok, failed, gone = (backend.submit(driver.spec()) for _ in range(4))
        driver.exit(ok, 0, ["all done"])
        driver.exit(failed, 3, ["about to fail"])
        driver.vanish(gone)
        unknown, malformed = driver.unknown_handle(), driver.malformed_handle()
        self.wait(backend, ok, lambda s: s.is_final)
        self.wait(backend, failed, lambda s: s.is_final)
        self.wait(backend, gone, lambda s: s.is_final)
        statuses = backend.status([running, ok, failed, gone, unknown, malformed])
        assert set(statuses) == {h.id for h in (running, ok, failed, gone, unknown, malformed)}
        assert statuses[running.id].state in (JobState.PENDING, JobState.RUNNING)
        assert statuses[ok.id].state is JobState.SUCCEEDED
        assert statuses[failed.id].state is JobState.FAILED and statuses[failed.id].exit_code == 3
        assert "3" in statuses[failed.id].reason
        assert statuses[gone.id].state is JobState.MISSING
        assert statuses[unknown.id].state is JobState.MISSING
        assert statuses[malformed.id].state in (JobState.MISSING, JobState.UNKNOWN) and statuses[malformed.id].reason
        backend.cancel(running, grace_seconds=1)

    def test_status_says_when_the_provider_accepted_the_job(self, backend: Backend, driver: JobDriver) -> None:
        """The job's clock (design rule 9): the monitor's limits count from when the provider accepted the job."""
        slack = dt.timedelta(seconds=5)  # the emulators' and this process's clocks are this machine's
        before = dt.datetime.now(dt.timezone.utc) - slack
        handle = backend.submit(driver.spec())
        status = backend.status([handle])[handle.id]
        after = dt.datetime.now(dt.timezone.utc) + slack
        assert status.state.is_alive
        if not self.acceptance_time:
            assert status.accepted_at is None
        else:
            assert status.accepted_at is not None and before <= status.accepted_at <= after
            if status.started_at is not None:
                assert status.accepted_at <= status.started_at + slack
        driver.exit(handle, 3, ["bye"])
        assert self.final(backend, handle) is JobState.FAILED
        ended = backend.status([handle])[handle.id]
        if ended.accepted_at is not None:  # required of a live job only (the limits concern live jobs)
            assert before <= ended.accepted_at <= after
        if ended.started_at is not None and ended.finished_at is not None:
            assert ended.started_at <= ended.finished_at + slack

    # -- cancel, logs, cleanup ---------------------------------------------------------------------------------------

    def test_cancel_stops_the_job_and_is_idempotent(self, backend: Backend, driver: JobDriver) -> None:
        handle = backend.submit(driver.spec())
        assert backend.status([handle])[handle.id].state in (JobState.PENDING, JobState.RUNNING)
        backend.cancel(handle, grace_seconds=2)
        assert self.final(backend, handle) is JobState.STOPPED
        backend.cancel(handle, grace_seconds=1)  # already stopped: fine
        backend.cancel(driver.unknown_handle(), grace_seconds=1)  # never existed: fine

    def test_logs_return_the_last_lines(self, backend: Backend, driver: JobDriver) -> None:
        handle = backend.submit(driver.spec())
        driver.exit(handle, 3, ["first line", "about to fail"])
        self.final(backend, handle)
        tail = backend.logs(handle, lines=10)
        assert tail[-2:] == ["first line", "about to fail"]
        assert backend.logs(handle, lines=1) == ["about to fail"]
        assert backend.logs(handle, lines=0) == []
        assert backend.logs(driver.unknown_handle(), lines=5) == []

    def test_cleanup_removes_a_finished_job_and_spares_a_live_one(self, backend: Backend, driver: JobDriver) -> None:
        alive, done = backend.submit(driver.spec()), backend.submit(driver.spec())
        driver.exit(done, 0, [])
        before = self.final(backend, done)
        backend.cleanup(alive)
        backend.cleanup(done)
        backend.cleanup(done)  # idempotent
        backend.cleanup(driver.unknown_handle())
        after = backend.status([alive, done])
        assert after[alive.id].state in (JobState.PENDING, JobState.RUNNING)
        assert after[done.id].state is (JobState.MISSING if backend.keeps_finished_jobs else before)
        backend.cancel(alive, grace_seconds=1)

    # -- errors and secrets --------------------------------------------------------------------------------------------

    def test_a_refused_job_surfaces_as_a_backend_error(self, backend: Backend, driver: JobDriver) -> None:
        try:
            handle = backend.submit(driver.refused_spec())
        except BackendError as exc:
            assert exc.backend == backend.name and exc.one_line()
            return
        except PushpoolError as exc:  # pragma: no cover - the wrong branch of the tree
            pytest.fail(f"not a BackendError: {exc!r}")
        assert self.final(backend, handle) is JobState.FAILED

    def test_the_credential_is_never_sent_in_plaintext(self, backend: Backend, driver: JobDriver) -> None:
        spec = driver.spec()
        assert SECRET in spec.secret_env.values()
        handle = backend.submit(spec)
        text = driver.sent(handle)
        assert text and SECRET not in text
