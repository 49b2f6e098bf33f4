"""The process backend finds a job's processes by the marker in their environment (``PUSHPOOL_JOB_ID``): read from
``/proc`` on Linux, through psutil elsewhere. Both give the same answer: live processes only, the exact variable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from pushpool.providers.process.backend import MARKER, _job_processes_from_psutil
from pushpool.providers.process.supervisor import job_processes

SCANS = {"proc": job_processes, "psutil": _job_processes_from_psutil}


def _start(env: dict[str, str], code: str = "import time; time.sleep(60)") -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **env})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the kernel places the environment a moment after exec begins
        try:
            with open(f"/proc/{process.pid}/environ", "rb") as fh:
                if fh.read():
                    break
        except OSError:
            pass
        time.sleep(0.01)
    return process


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
def test_live_processes_with_the_marker_are_found_by_their_job(
    scan: Callable[[], dict[str, list[int]]], processes: list[subprocess.Popen[bytes]]
) -> None:
    a, b = (f"job-{os.getpid()}-{n}" for n in "ab")
    processes += [_start({MARKER: a}), _start({MARKER: a}), _start({MARKER: b})]
    processes += [_start({f"X_{MARKER}": f"job-{os.getpid()}-c"}), _start({MARKER: ""})]  # neither is a job's
    scanned = scan()
    found = {key: sorted(pids) for key, pids in scanned.items() if key.startswith(f"job-{os.getpid()}-")}
    assert found == {a: sorted(p.pid for p in processes[:2]), b: [processes[2].pid]}
    listed = {pid for pids in scanned.values() for pid in pids}
    assert not listed & {p.pid for p in processes[3:]}


@pytest.mark.parametrize("scan", SCANS.values(), ids=SCANS.keys())
def test_a_zombie_is_not_a_live_process_of_its_job(scan: Callable[[], dict[str, list[int]]]) -> None:
    key = f"job-{os.getpid()}-zombie"
    process = subprocess.Popen([sys.executable, "-c", "pass"], env={**os.environ, MARKER: key})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited, not yet reaped: a zombie
        with open(f"/proc/{process.pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.02)
    else:
        raise AssertionError("the child did not exit")
    try:
        assert key not in scan()
    finally:
        process.wait()
