"""Start and stop a local Prefect server (SQLite, its own PREFECT_HOME) for the demo, tests and benchmarks.

Runs ``prefect server start`` as a child process bound to 127.0.0.1 and stops it by its pid. The
``prefect`` package must be installed in the interpreter given (the ``dev`` extra, or another environment's python:
``make compat-prefect`` starts servers of other Prefect releases that way); pushpool never imports it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# Prefect's command line, as its ``prefect`` script runs it (3.0 has no ``python -m prefect``).
_CLI = "import sys; sys.argv[0] = 'prefect'; from prefect.cli import app; app()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalPrefectServer:
    home: Path
    port: int
    process: subprocess.Popen  # type: ignore[type-arg]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        """Stop the server and every process it started: it runs in a process group of its own (``start``), and
        Prefect 3.0's ``server start`` leaves its uvicorn child running when only the parent is stopped."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True


# How many free ports ``start`` tries when each is taken before the server binds it.
_PORT_ATTEMPTS = 3


def start(
    home: Path,
    *,
    port: int | None = None,
    python: str | None = None,
    extra_env: dict[str, str] | None = None,
    late_runs: bool = False,
    scheduler: bool = False,
    timeout: float = 120.0,
) -> LocalPrefectServer:
    """Start a server whose data lives in ``home`` and wait until ``/api/health`` answers.

    ``scheduler`` turns on Prefect's scheduler services (runs of deployments with schedules); tests that count runs
    leave it off. ``late_runs`` turns on the service that marks overdue Scheduled runs Late.

    With no ``port``, a free one is chosen; if another process takes it between the probe and the server's bind (the
    server then exits saying the address is in use), the server starts again on another, up to ``_PORT_ATTEMPTS``
    times. A ``port`` asked for is never changed.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "true" if late_runs else "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true" if scheduler else "false",
        "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
        "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    env.pop("PREFECT_API_URL", None)
    deadline = time.monotonic() + timeout
    for _ in range(1 if port else _PORT_ATTEMPTS):
        try:
            return _start_once(home, port or free_port(), python or sys.executable, env, deadline, timeout)
        except _PortTaken:
            continue
    raise RuntimeError(f"the Prefect server's port was in use; see {home / 'server.log'}")


class _PortTaken(Exception):
    """The server exited during start-up because another process had its port."""


def _start_once(
    home: Path, port: int, python: str, env: dict[str, str], deadline: float, timeout: float
) -> LocalPrefectServer:
    log_path = home / "server.log"
    with open(log_path, "ab") as log:  # the child writes to its own copy of the file
        offset = log.tell()
        process = subprocess.Popen(
            [python, "-c", _CLI, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = LocalPrefectServer(home, port, process)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()  # whatever it started
            # Prefect's own check says "Port N is already in use"; uvicorn's bind "... address already in use".
            if "already in use" in _read_from(log_path, offset).lower():
                raise _PortTaken
            raise RuntimeError(f"the Prefect server exited during start-up; see {log_path}")
        try:
            with urllib.request.urlopen(f"{server.api_url}/health", timeout=1) as response:
                if response.status == 200 and process.poll() is None:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; see {log_path}")


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")
