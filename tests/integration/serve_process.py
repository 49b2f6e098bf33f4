"""A real ``pushpool serve`` process on 127.0.0.1 for CLI tests: started with its own ``PUSHPOOL_HOME``, its output in
a file, stopped by its pid (SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pushpool import localserver
from pushpool.tls import default_context


@dataclass
class ServeProcess:
    process: subprocess.Popen  # type: ignore[type-arg]
    port: int
    home: Path
    log_path: Path

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.home / "webhook-token").read_text().strip()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM by pid; the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def start_serve(
    env: dict[str, str], home: Path, *args: str, port: int | None = None, event_stream: bool = False
) -> ServeProcess:
    """``pushpool serve`` with only the webhook as a trigger (no event stream unless asked, no monitor tick during a
    test), once ``/health`` answers."""
    port = port or localserver.free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home.parent / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "pushpool.entrypoints.cli", "serve", "--port", str(port)]
    cmd += [*([] if event_stream else ["--no-event-stream"]), "--monitor-interval", "3600", *args]
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        cmd, env={**env, "PUSHPOOL_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    serve = ServeProcess(process, port, home, log_path)
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=1, verify=default_context()) as http:  # one client for every poll
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"pushpool serve exited {process.returncode}:\n{serve.log()}")
            try:
                if http.get(f"{serve.address}/health").status_code == 200:
                    return serve
            except httpx.HTTPError:
                time.sleep(0.1)
    serve.stop()
    raise AssertionError(f"pushpool serve did not answer on {serve.address}:\n{serve.log()}")
