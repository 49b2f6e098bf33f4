"""The ``process`` backend: each job is a detached local process (``prefect flow-run execute`` by default).

A job lives in ``<root>/<run id>_<attempt>/``::

    command.json  argv, working directory and memory limit (no environment: secrets stay out of files)
    job.json      the supervisor's pid, host, start time
    child.json    the command's pid
    output.log    stdout and stderr
    exit.json     exit code and end time, written by the supervisor when the command ends
    stopped       written before pushpool stops the job

The handle id is ``<host>::<root tag>::<run id>_<attempt>`` (the root tag is a short hash of the job directory's
path): a monitor on another host, or one keeping its jobs in another directory, answers UNKNOWN rather than judging
a job it cannot see. Submission is idempotent per attempt: a lock file serialises submits and an existing
``job.json`` is returned. ``cleanup`` removes a finished job's directory.

A job's environment is an allowlist (``pushpool/job_environment.py``): what ``prefect flow-run execute`` needs to
start on this machine (``PATH``, ``HOME``, locale, ``TMPDIR``, the Python environment, CA bundles, ``PREFECT_HOME``)
and the operator's ``PUSHPOOL_JOB_ENV_PASSTHROUGH`` names, then the job's spec (``PREFECT_API_URL``, the run's ids,
the job's ``env``, the Prefect credential). Nothing else of pushpool's environment (cloud keys, database URLs,
pushpool's own settings) reaches it — unlike Prefect's process worker, which passes its whole environment on.

Every process of a job carries ``PUSHPOOL_JOB_ID=<run id>_<attempt>`` in its environment. Prefect's engine starts in
a session of its own and outlives a killed parent, so process groups and parent links are not enough: a job is alive
while any process carrying its marker is, and stopping a job signals all of them (found with psutil). A job whose
command died abnormally (the supervisor stops the rest) or whose supervisor died (``status`` stops the rest) is ended
as a whole: no orphaned engine goes on running the flow of a job that reads as ended.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from pushpool.errors import BackendError, JobNotFoundError
from pushpool.job_environment import job_environ
from pushpool.providers.base import BackendBase, JobHandle, JobSpec, JobState, JobStatus, describe_exit
from pushpool.providers.process.config import DISPATCH_LEAD_SECONDS, ProcessJobConfig
from pushpool.providers.process.supervisor import job_processes, stop_job_processes

NAME = "process"
MARKER = "PUSHPOOL_JOB_ID"


def default_root() -> Path:
    """Where jobs live when no directory is given (Settings' default: PUSHPOOL_HOME/jobs)."""
    return Path.home() / ".pushpool" / "jobs"


class ProcessBackend(BackendBase):
    """Jobs as local processes; see the module docstring for the on-disk layout."""

    name = NAME
    start_timeout_seconds = 60.0  # a local process starts at once; Pending longer than this is stuck
    keeps_finished_jobs = True  # the job directory, until cleanup
    dispatch_lead_seconds = DISPATCH_LEAD_SECONDS

    def __init__(
        self,
        root: Path | str,
        *,
        host: str | None = None,
        python: str | None = None,
        env_passthrough: Sequence[str] = (),
    ) -> None:
        """``env_passthrough``: this process's variables that jobs also get (``PUSHPOOL_JOB_ENV_PASSTHROUGH``)."""
        self.root = Path(root).resolve()
        self.env_passthrough = tuple(env_passthrough)
        self.host = host or socket.gethostname()
        self.python = python or sys.executable
        self.root_tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]

    @classmethod
    def from_options(
        cls, *, root: Path | str | None = None, env_passthrough: Sequence[str] = (), **_: Any
    ) -> ProcessBackend:
        return cls(root or default_root(), env_passthrough=env_passthrough)

    # -- the Protocol ------------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec) -> JobHandle:
        key = _key(spec.run_id, spec.attempt)
        jobdir = self._jobdir(key)
        with self._translate_errors(), self._locked(jobdir):
            handle = JobHandle(NAME, self._job_id(key))
            if (jobdir / "job.json").exists():
                return handle
            argv = self._argv(spec.command, spec.env)
            working_dir = spec.config.working_dir if isinstance(spec.config, ProcessJobConfig) else None
            if working_dir and not Path(working_dir).is_dir():  # the process could not start: say why, not "127"
                raise BackendError(f"working directory {working_dir!r} does not exist", backend=NAME)
            memory = spec.config.memory_limit_mb if isinstance(spec.config, ProcessJobConfig) else None
            _write_json(
                jobdir / "command.json", {"argv": argv, "cwd": str(working_dir or jobdir), "memory_limit_mb": memory}
            )
            with open(jobdir / "output.log", "ab") as out:
                proc = subprocess.Popen(
                    [self.python, "-m", "pushpool.providers.process.supervisor", str(jobdir)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self._environment(spec),
                    start_new_session=True,
                    close_fds=True,
                )
            # Reap the supervisor when it ends: in a long-lived `pushpool serve` it would stay <defunct> otherwise.
            threading.Thread(target=proc.wait, name=f"pushpool-reap-{proc.pid}", daemon=True).start()
            _wait_until_listed(proc.pid)
            _write_json(
                jobdir / "job.json",
                {
                    "pid": proc.pid,
                    "host": self.host,
                    "started_at": time.time(),
                    "name": spec.name,
                    "pool": spec.pool_name,
                },
            )
            return handle

    def find(self, spec: JobSpec) -> JobHandle | None:
        key = _key(spec.run_id, spec.attempt)
        if (self._jobdir(key, create=False) / "job.json").exists():
            return JobHandle(NAME, self._job_id(key))
        return None

    def status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        processes = _job_processes() if handles else {}
        out: dict[str, JobStatus] = {}
        for handle in handles:
            try:
                out[handle.id] = self._status(handle, processes)
            except JobNotFoundError as exc:
                out[handle.id] = JobStatus(JobState.MISSING, reason=exc.one_line())
            except BackendError as exc:
                out[handle.id] = JobStatus(JobState.UNKNOWN, reason=exc.one_line())
            except OSError as exc:  # an unreadable job directory concerns this handle only
                out[handle.id] = JobStatus(JobState.UNKNOWN, reason=f"cannot read the job: {exc.strerror or exc}")
        return out

    def cancel(self, handle: JobHandle, *, grace_seconds: float = 10.0) -> None:
        jobdir = self._dir_for(handle)
        key = jobdir.name
        if not _job_processes().get(key):
            return
        (jobdir / "stopped").touch()
        _signal(_job_processes().get(key, []), signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not _job_processes().get(key):
                return
            time.sleep(0.05)
        _signal(_job_processes().get(key, []), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _job_processes().get(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _job_processes().get(key):
            raise BackendError(f"job {handle.id} survived SIGKILL", backend=NAME)

    def logs(self, handle: JobHandle, *, lines: int = 50) -> list[str]:
        try:
            path = self._dir_for(handle) / "output.log"
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                data = fh.read()
        except (FileNotFoundError, JobNotFoundError):
            return []
        text = data.decode("utf-8", "replace").splitlines()
        return text[-lines:] if lines > 0 else []

    def cleanup(self, handle: JobHandle) -> None:
        """Remove a finished job's directory (a job that is still alive is left alone)."""
        try:
            jobdir = self._dir_for(handle)
        except JobNotFoundError:
            return
        if _job_processes().get(jobdir.name):
            return
        with self._translate_errors():
            if jobdir.exists():
                shutil.rmtree(jobdir)

    # -- helpers -----------------------------------------------------------------------------------------------

    def _job_id(self, key: str) -> str:
        return f"{self.host}::{self.root_tag}::{key}"

    def _jobdir(self, key: str, *, create: bool = True) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise BackendError(f"invalid job key {key!r}", backend=NAME)
        path = self.root / key
        if create:
            with self._translate_errors():
                path.mkdir(parents=True, exist_ok=True)
        return path

    def _dir_for(self, handle: JobHandle) -> Path:
        parts = handle.id.split("::")
        if len(parts) != 3 or not all(parts):
            raise JobNotFoundError(f"not a process job id: {handle.id!r}", backend=NAME)
        host, root_tag, key = parts
        if host != self.host:
            raise BackendError(f"job {handle.id} runs on host {host!r}, not on {self.host!r}", backend=NAME)
        if root_tag != self.root_tag:
            raise BackendError(f"job {handle.id} belongs to another job directory than {self.root}", backend=NAME)
        return self._jobdir(key, create=False)

    @contextlib.contextmanager
    def _locked(self, jobdir: Path) -> Iterator[None]:
        with open(jobdir / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise BackendError(f"cannot run the job process: {exc.strerror or exc}", backend=NAME) from exc

    def _argv(self, command: Sequence[str], env: Mapping[str, str]) -> list[str]:
        argv = list(command)
        if not argv:
            raise BackendError("empty command", backend=NAME)
        if "/" not in argv[0]:
            search = os.pathsep.join([env.get("PATH") or os.environ.get("PATH", ""), os.path.dirname(self.python)])
            found = shutil.which(argv[0], path=search)
            if found is None:
                raise BackendError(f"command {argv[0]!r} not found on PATH", backend=NAME)
            argv[0] = found
        return argv

    def _environment(self, spec: JobSpec) -> dict[str, str]:
        """The job's environment: the allowlisted part of this process's, then the job's own (see the module)."""
        env = job_environ(self.env_passthrough)
        env.update(spec.env)
        env.update(spec.secret_env)
        env[MARKER] = _key(spec.run_id, spec.attempt)
        return env

    def _status(self, handle: JobHandle, processes: Mapping[str, list[int]]) -> JobStatus:
        jobdir = self._dir_for(handle)
        job = _read_json(jobdir / "job.json")
        if job is None:
            return JobStatus(JobState.MISSING, reason="no such job")
        # The job record is written when the supervisor was spawned: the job was accepted and started then.
        started = _timestamp(job.get("started_at"))
        alive = processes.get(jobdir.name, [])
        extra = {"pid": job.get("pid"), "dir": str(jobdir), "processes": alive}
        ended = _read_json(jobdir / "exit.json")  # read after the processes were listed: see _orphaned
        stopped = (jobdir / "stopped").exists()
        if alive and ended is None and job.get("pid") not in alive:
            ended = _orphaned(jobdir, job.get("pid"))
            alive = []
        if alive:  # the command may have exited while processes it started (the engine) still run
            return JobStatus(JobState.RUNNING, None, "", started, None, extra, accepted_at=started)
        if ended is not None and ended.get("exit_code") is None:
            finished = _timestamp(ended.get("finished_at"))
            reason = f"process {ended.get('error')}"
            return JobStatus(JobState.FAILED, None, reason, started, finished, extra, accepted_at=started)
        if ended is not None:
            code = int(ended["exit_code"])
            finished = _timestamp(ended.get("finished_at"))
            if code == 0:
                return JobStatus(
                    JobState.SUCCEEDED, 0, "exited with code 0", started, finished, extra, accepted_at=started
                )
            state = JobState.STOPPED if stopped else JobState.FAILED
            reason = f"process {ended['error']}" if ended.get("error") else f"process ended with {describe_exit(code)}"
            return JobStatus(state, code, reason, started, finished, extra, accepted_at=started)
        if stopped:
            return JobStatus(JobState.STOPPED, None, "process was stopped", started, None, extra, accepted_at=started)
        why = "process disappeared without recording an exit code"
        return JobStatus(JobState.MISSING, None, why, started, accepted_at=started)


def _orphaned(jobdir: Path, supervisor: Any) -> dict[str, Any]:
    """A job whose supervisor died (``kill -9``, the OOM killer) without recording how its command ended, while other
    processes of it live on: nothing supervises them any more, and their run would read as running until the flow
    body ends. Stop them and record the end as the supervisor would have (no exit code: it is unknown).

    The supervisor writes ``exit.json`` before it exits, and the processes were listed before ``exit.json`` was read,
    so a supervisor missing from that list with no ``exit.json`` did not end normally.
    """
    count = stop_job_processes(jobdir.name)
    ended = {
        "exit_code": None,
        "finished_at": time.time(),
        "error": f"supervisor (pid {supervisor}) died without recording how the job's command ended; "
        f"{count} remaining process{'es' if count != 1 else ''} of the job stopped",
    }
    with contextlib.suppress(OSError):
        _write_json(jobdir / "exit.json", ended)
    return ended


def _key(run_id: str, attempt: str) -> str:
    return f"{run_id}_{attempt}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


def _timestamp(value: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.timezone.utc) if value else None


def _job_processes() -> dict[str, list[int]]:
    """Live (not zombie) processes carrying the job marker, by job key. Read from ``/proc`` where there is one (a
    tenth of psutil's time: only the environment's bytes are searched, no dictionary is built per process), else
    through psutil (macOS)."""
    return job_processes() if os.path.isdir("/proc") else _job_processes_from_psutil()


def _job_processes_from_psutil() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["pid"] == me or proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        try:
            key = proc.environ().get(MARKER)
        except (psutil.Error, OSError):  # gone meanwhile, another user's, or a kernel thread
            continue
        if key:
            found.setdefault(key, []).append(proc.info["pid"])
    return found


def _wait_until_listed(pid: int, timeout: float = 5.0) -> None:
    """Return once the just-started supervisor ``pid`` shows its environment, and so its marker, to ``_job_processes``.

    ``Popen`` returns as the new program's exec begins, a moment before the kernel has placed its environment: in
    between, ``/proc/<pid>/environ`` reads empty. On a loaded machine a status or cancel in that moment found no
    process of the job: a job reported missing (its run would be crashed) right after it was started, or a cancel
    that stopped nothing (the contract suite met both while the full suite loaded both cores).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).environ():
                return
        except psutil.Error:  # it ended already (its exit is recorded or it is missing), or cannot be read
            return
        time.sleep(0.002)


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
