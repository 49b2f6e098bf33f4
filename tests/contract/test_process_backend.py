"""The process backend keeps the backend contract with real processes; its driver plays the job's own program."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from pushpool.errors import BackendError
from pushpool.providers.base import JobHandle, JobSpec, JobState
from pushpool.providers.process.backend import MARKER, ProcessBackend
from pushpool.providers.process.config import ProcessJobConfig

from tests.contract.contract import SECRET, BackendContract, contract_spec

# The job waits for the driver: it prints ctl/out and exits with the code in ctl/exit once that file exists.
JOB = 'while [ ! -e "$CTL/exit" ]; do sleep 0.05; done; cat "$CTL/out" 2>/dev/null; exit "$(cat "$CTL/exit")"'


class ProcessDriver:
    supports_locations = False  # one machine, one job directory

    def __init__(self, backend: ProcessBackend, ctl: Path) -> None:
        self.backend, self.ctl = backend, ctl

    def spec(self, *, location: str = "default") -> JobSpec:
        run_id = str(uuid.uuid4())
        ctl = self.ctl / run_id
        ctl.mkdir(parents=True)
        return contract_spec(
            ProcessJobConfig(), run_id=run_id, command=("sh", "-c", JOB), env={"CTL": str(ctl)}, labels={}
        )

    @staticmethod
    def _key(handle: JobHandle) -> str:
        return handle.id.rsplit("::", 1)[-1]

    def jobs_of(self, spec: JobSpec) -> int:
        return sum(
            1
            for p in self.backend.root.iterdir()
            if p.name == f"{spec.run_id}_{spec.attempt}" and (p / "job.json").exists()
        )

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        ctl = self.ctl / self._key(handle).split("_", 1)[0]
        (ctl / "out").write_text("".join(f"{line}\n" for line in lines))
        (ctl / "exit.tmp").write_text(str(code))
        os.replace(ctl / "exit.tmp", ctl / "exit")

    def vanish(self, handle: JobHandle) -> None:
        key = self._key(handle)
        supervisor = json.loads((self.backend.root / key / "job.json").read_text())["pid"]
        os.kill(supervisor, signal.SIGKILL)  # first, so that it cannot record how the job ended
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARKER) == key:
                    proc.kill()
            except psutil.Error:
                continue

    def unknown_handle(self) -> JobHandle:
        return JobHandle("process", f"{self.backend.host}::{self.backend.root_tag}::{uuid.uuid4()}_{uuid.uuid4()}")

    def malformed_handle(self) -> JobHandle:
        return JobHandle("process", "no-host-no-key")

    def refused_spec(self) -> JobSpec:
        return dataclasses.replace(self.spec(), command=("/no/such/program", "--x"))

    def sent(self, handle: JobHandle) -> str:
        jobdir = self.backend.root / self._key(handle)
        return "\n".join(p.read_text(errors="replace") for p in jobdir.iterdir() if p.is_file())


class TestProcessBackend(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> ProcessBackend:
        return ProcessBackend(tmp_path / "jobs")

    @pytest.fixture
    def driver(self, backend: ProcessBackend, tmp_path: Path) -> ProcessDriver:
        driver = ProcessDriver(backend, tmp_path / "ctl")
        yield driver
        if driver.ctl.exists():
            for run in driver.ctl.iterdir():  # release every job still waiting for its exit code
                (run / "exit").write_text("0")

    # -- what only the process backend has -------------------------------------------------------------------------

    def test_a_job_of_another_host_or_job_directory_is_unknown_not_missing(
        self, backend: ProcessBackend, tmp_path: Path
    ) -> None:
        key = f"{uuid.uuid4()}_{uuid.uuid4()}"
        other_root = ProcessBackend(tmp_path / "elsewhere").root_tag
        statuses = backend.status(
            [
                JobHandle("process", f"another-host::{backend.root_tag}::{key}"),
                JobHandle("process", f"{backend.host}::{other_root}::{key}"),
            ]
        )
        assert [s.state for s in statuses.values()] == [JobState.UNKNOWN, JobState.UNKNOWN]

    def test_sigterm_ignoring_job_is_killed_after_grace(self, backend: ProcessBackend, driver: ProcessDriver) -> None:
        spec = dataclasses.replace(driver.spec(), command=("sh", "-c", 'trap "" TERM; sleep 60'))
        handle = backend.submit(spec)
        time.sleep(0.5)
        started = time.monotonic()
        backend.cancel(handle, grace_seconds=1)
        assert time.monotonic() - started < 10
        assert backend.status([handle])[handle.id].state is JobState.STOPPED

    def test_invalid_run_ids_are_refused(self, backend: ProcessBackend, driver: ProcessDriver) -> None:
        with pytest.raises(BackendError):
            backend.submit(dataclasses.replace(driver.spec(), run_id="../escape", attempt="/x"))

    def test_a_finished_job_leaves_no_zombie_behind(self, backend: ProcessBackend, driver: ProcessDriver) -> None:
        """In a long-lived serve, each finished job's supervisor is reaped (it stayed <defunct> until the next job)."""
        handle = backend.submit(driver.spec())
        driver.exit(handle, 0, [])
        assert self.final(backend, handle) is JobState.SUCCEEDED
        supervisor = json.loads((backend.root / handle.id.rsplit("::", 1)[-1] / "job.json").read_text())["pid"]
        deadline = time.monotonic() + 5
        while psutil.pid_exists(supervisor) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not psutil.pid_exists(supervisor)  # a zombie still has its pid

    def test_a_command_that_cannot_start_says_why(
        self, backend: ProcessBackend, driver: ProcessDriver, tmp_path: Path
    ) -> None:
        """Not just "exit code 127": the reason the process could not start (here: not executable)."""
        script = tmp_path / "not-executable.sh"
        script.write_text("echo never\n")
        handle = backend.submit(dataclasses.replace(driver.spec(), command=(str(script),)))
        assert self.final(backend, handle) is JobState.FAILED
        status = backend.status([handle])[handle.id]
        assert status.exit_code == 127
        assert f"cannot start {str(script)!r}: Permission denied" in status.reason, status.reason

    def test_a_job_gets_an_allowlisted_environment_never_the_operators(
        self, driver: ProcessDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The job sees what it needs to start (PATH, HOME, locale …), the operator's passthrough names, its own env
        and the credential pushpool gives it — not the operator's cloud keys, database URL or pushpool settings, and
        not a variable merely because its name looks harmless (an allowlist, not a denylist)."""
        operator = {
            "AWS_SECRET_ACCESS_KEY": "aws-operator-secret",
            "AZURE_STORAGE_CONNECTION_STRING": "azure-operator-secret",
            "DATABASE_URL": "postgres://u:operator-secret@db/x",
            "PUSHPOOL_ADMIN_TOKEN": "admin-operator-secret",
            "PIP_INDEX_URL": "http://127.0.0.1:1/simple",
            "LC_TIME": "C",
        }
        for name, value in operator.items():
            monkeypatch.setenv(name, value)
        backend = ProcessBackend(tmp_path / "jobs", env_passthrough=("PIP_INDEX_URL",))
        dump = tmp_path / "env.json"
        spec = dataclasses.replace(
            driver.spec(),
            command=(sys.executable, "-c", f"import json, os; json.dump(dict(os.environ), open({str(dump)!r}, 'w'))"),
            env={"MINE": "1"},
        )
        handle = backend.submit(spec)
        assert self.final(backend, handle) is JobState.SUCCEEDED, backend.logs(handle)
        seen = json.loads(dump.read_text())
        assert not [value for value in seen.values() if "operator-secret" in value]
        assert {k: seen[k] for k in ("PIP_INDEX_URL", "LC_TIME", "MINE", "PREFECT_API_KEY")} == {
            "PIP_INDEX_URL": "http://127.0.0.1:1/simple",
            "LC_TIME": "C",
            "MINE": "1",
            "PREFECT_API_KEY": SECRET,
        }
        assert seen["PATH"] == os.environ["PATH"] and seen["HOME"] == os.environ["HOME"]
        assert set(seen) - {"PIP_INDEX_URL", "LC_TIME", "MINE", "PREFECT_API_KEY", MARKER} <= set(os.environ)
