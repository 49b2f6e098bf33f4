"""``LocalPrefectServer.stop`` stops every process the server started, not only the one ``start`` spawned: Prefect
3.0's ``server start`` leaves its uvicorn child running when only its parent is stopped (leaked servers filled this
machine during the version matrix)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
from pushpool.localserver import LocalPrefectServer

# A parent that starts a child, prints its pid and waits: as `prefect server start` does with uvicorn.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_stop_ends_the_servers_children_too(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    child = int(process.stdout.readline())
    assert psutil.pid_exists(child)
    LocalPrefectServer(tmp_path, 0, process).stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        psutil.Process(child).kill()
        raise AssertionError("the server's child outlived stop()")
    process.stdout.close()
