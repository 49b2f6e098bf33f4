"""``localserver.start`` when its port is taken between the probe and the server's bind (seen under ``make test``: the
demo's server exited with "[Errno 98] ... address already in use"): with no port asked for it starts again on another;
a port asked for is never changed, and the error says why. Any other early exit is reported, not retried."""

from __future__ import annotations

import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pushpool import localserver

from tests.helpers import server_python

# Stands in for the server's interpreter: ``python -c <cli> server start --host H --port P``. It exits as Prefect or
# uvicorn does when the port is in use, or with ``FAKE_EXIT`` when that is set, else answers /api/health.
FAKE_SERVER = """#!{python}
import http.server, os, socket, sys
port = int(sys.argv[-1])
if os.environ.get("FAKE_EXIT"):
    print(os.environ["FAKE_EXIT"], flush=True)
    sys.exit(1)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")
    def log_message(self, *args):
        pass
try:
    server = http.server.HTTPServer(("127.0.0.1", port), Health)
except OSError as exc:
    print(os.environ["IN_USE_MESSAGE"].format(port=port, exc=exc), flush=True)
    sys.exit(1)
server.serve_forever()
"""

PREFECT_MESSAGE = "Port {port} is already in use. Please specify a different port with the `--port` flag."
UVICORN_MESSAGE = (
    "ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): address already in use"
)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: a server's bind fails, a client is refused at once
        yield int(sock.getsockname()[1])


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    path = tmp_path / "fake-python"
    path.write_text(FAKE_SERVER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def probes(monkeypatch: pytest.MonkeyPatch, first: list[int]) -> list[int]:
    """``free_port`` answers ``first`` in turn, then real free ports; returns the ports it gave."""
    given: list[int] = []
    real = localserver.free_port

    def free_port() -> int:
        given.append(first.pop(0) if first else real())
        return given[-1]

    monkeypatch.setattr(localserver, "free_port", free_port)
    return given


@pytest.mark.parametrize("message", [PREFECT_MESSAGE, UVICORN_MESSAGE], ids=["prefect-check", "uvicorn-bind"])
def test_a_probed_port_taken_before_the_bind_is_replaced(
    tmp_path: Path, fake_python: str, taken_port: int, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    given = probes(monkeypatch, [taken_port, taken_port])
    server = localserver.start(tmp_path / "home", python=fake_python, extra_env={"IN_USE_MESSAGE": message})
    try:
        assert given[:2] == [taken_port, taken_port] and len(given) == 3
        assert server.port == given[2] != taken_port
        assert server.process.poll() is None
    finally:
        server.stop()


def test_it_gives_up_after_three_taken_ports(
    tmp_path: Path, fake_python: str, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = probes(monkeypatch, [taken_port] * 5)
    with pytest.raises(RuntimeError, match="port was in use"):
        localserver.start(tmp_path / "home", python=fake_python, extra_env={"IN_USE_MESSAGE": UVICORN_MESSAGE})
    assert len(given) == 3


def test_any_other_early_exit_is_reported_at_once(
    tmp_path: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = probes(monkeypatch, [])
    with pytest.raises(RuntimeError, match="exited during start-up"):
        localserver.start(tmp_path / "home", python=fake_python, extra_env={"FAKE_EXIT": "no such database"})
    assert len(given) == 1


def test_a_port_asked_for_is_never_changed_and_the_error_says_it_was_in_use(tmp_path: Path, taken_port: int) -> None:
    """Against a real Prefect server: its own message for a port in use is one ``start`` recognises."""
    with pytest.raises(RuntimeError, match="port was in use") as error:
        localserver.start(tmp_path / "home", port=taken_port, python=server_python())
    assert f"Port {taken_port} is already in use" in (tmp_path / "home" / "server.log").read_text()
    assert "server.log" in str(error.value)


def test_the_log_keeps_every_attempt(tmp_path: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt's message is read from where that attempt began: an earlier one's in the same log is not its own."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "server.log").write_text(UVICORN_MESSAGE.format(port=1) + "\n")
    given = probes(monkeypatch, [])
    with pytest.raises(RuntimeError, match="exited during start-up"):
        localserver.start(home, python=fake_python, extra_env={"FAKE_EXIT": "no such database"})
    assert len(given) == 1
    assert (home / "server.log").read_text().splitlines() == [UVICORN_MESSAGE.format(port=1), "no such database"]
