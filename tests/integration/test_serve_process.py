"""`pushpool serve` as a process (issue 13, item 9): it says once where it serves, records where it listens under
PUSHPOOL_HOME and removes the record when it stops, logs that it stops on SIGTERM, and a webhook client that hangs up
before the answer is one line in its log — the run is submitted all the same — not a traceback."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import EXITS_AT_ONCE, PrefectHelper
from tests.integration.serve_process import start_serve

pytestmark = pytest.mark.integration


@pytest.fixture
def env(prefect_api: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    return {**keep, "PREFECT_API_URL": prefect_api}


def test_serve_says_where_once_records_it_and_logs_its_stop_on_sigterm(env: dict[str, str], tmp_path: Path) -> None:
    home = tmp_path / "pp"
    serve = start_serve(env, home)
    record = home / "serve" / f"{serve.port}.json"
    assert json.loads(record.read_text())["submit_url"] == f"{serve.address}/submit"
    assert json.loads(record.read_text())["pid"] == serve.process.pid
    assert serve.stop() == 0
    log = serve.log()
    assert log.count("serving on") == 1, log
    assert f"serving on {serve.address}" in log and f"{serve.address}/submit" in log
    assert "received SIGTERM: stopping" in log and log.rstrip().endswith("pushpool serve stopped"), log
    assert not record.exists()
    assert (home / "webhook-token").read_text().strip() not in log


def test_serve_keeps_an_admin_token_of_its_own_for_provision_and_monitor(env: dict[str, str], tmp_path: Path) -> None:
    """`pushpool serve` makes <home>/admin-token (0600, unlike the webhook token, never in its log): /provision takes it
    and refuses the webhook token with 403; `work-pool create` needs neither (it provisions in its own process)."""
    home = tmp_path / "pp"
    serve = start_serve(env, home)
    try:
        admin, webhook = (home / "admin-token").read_text().strip(), serve.token
        assert admin and admin != webhook
        assert (home / "admin-token").stat().st_mode & 0o777 == 0o600
        body = {"name": f"admin-{os.getpid()}-{time.time_ns()}", "type": "process:push", "dry_run": True}
        with httpx.Client(base_url=serve.address, timeout=60) as http:
            refused = http.post("/provision", json=body, headers={"Authorization": f"Bearer {webhook}"})
            assert refused.status_code == 403 and "admin token" in refused.json()["error"], refused.text
            planned = http.post("/provision", json=body, headers={"Authorization": f"Bearer {admin}"})
            assert planned.status_code == 200, planned.text
            assert {step["action"] for step in planned.json()["steps"]} == {"would create"}  # a dry run
    finally:
        serve.stop()
    assert admin not in serve.log() and "provision and monitor: POST with the admin token" in serve.log()


def hang_up_after_sending(address: tuple[str, int], request: bytes) -> None:
    """Send the whole request, then close with a reset (SO_LINGER 0) without reading the answer — as Prefect's webhook
    client does when it gives up waiting."""
    sock = socket.create_connection(address)
    sock.sendall(request)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_webhook_client_that_hangs_up_is_one_line_and_the_run_is_submitted(
    env: dict[str, str], tmp_path: Path, prefect: PrefectHelper
) -> None:
    serve = start_serve(env, tmp_path / "pp")
    try:
        pool = prefect.unique("hangup")
        prefect.create_pool(pool)  # no automation: only the request below can submit the run
        run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=EXITS_AT_ONCE))
        body = json.dumps({"flow_run_id": run_id}).encode()
        head = (
            f"POST /submit HTTP/1.1\r\nHost: 127.0.0.1:{serve.port}\r\nAuthorization: Bearer {serve.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        hang_up_after_sending(("127.0.0.1", serve.port), head.encode() + body)
        assert prefect.wait_submitted(run_id, timeout=90)["infrastructure_pid"]  # submitted all the same
        deadline = time.monotonic() + 30
        while "hung up" not in serve.log() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        serve.stop()
    log = serve.log()
    hung_up = [line for line in log.splitlines() if "hung up" in line]
    assert len(hung_up) == 1 and run_id in hung_up[0] and "submitted" in hung_up[0], log
    for noise in ("Traceback", "BrokenPipeError", "ConnectionResetError", "Exception occurred"):
        assert noise not in log, log


def test_a_port_in_use_is_one_line_and_a_killed_serves_record_is_ignored(
    env: dict[str, str], tmp_path: Path, prefect: PrefectHelper
) -> None:
    import signal
    import subprocess
    import sys

    first = start_serve(env, tmp_path / "first")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "pushpool.entrypoints.cli", "serve", "--port", str(first.port)],
            env={**env, "PUSHPOOL_HOME": str(tmp_path / "second")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"pushpool: error: cannot listen on 127.0.0.1:{first.port}: Address already in use"
        ]
        assert not (tmp_path / "second" / "serve").exists() or not list((tmp_path / "second" / "serve").iterdir())
    finally:
        os.kill(first.process.pid, signal.SIGKILL)  # no chance to remove its record
        first.process.wait(timeout=30)
    record = tmp_path / "first" / "serve" / f"{first.port}.json"
    assert record.exists()
    pool = prefect.unique("stale")
    created = subprocess.run(
        [sys.executable, "-m", "pushpool.entrypoints.cli", "work-pool", "create", pool, "--type", "process:push"],
        env={**env, "PUSHPOOL_HOME": str(tmp_path / "first")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    assert "no pushpool serve is running" in created.stderr and not record.exists()


BURST, AT_ONCE = 1000, 50


def test_a_burst_of_wrong_token_requests_gets_a_json_401_each_and_no_reset(env: dict[str, str], tmp_path: Path) -> None:
    """Issue 28 item 3: 1,000 wrong-token requests sent 50 at a time, each on its own connection, to a real serve:
    every one a JSON 401, none reset. socketserver's listen backlog of 5 overflowed under such a burst: connections
    reset where the stack resets on overflow (the issue counted 31 in 1,000), SYNs dropped and retried a second later
    on Linux (the burst took 14 s, against 1 s now). serve listens with a backlog of 1,024 (capped by somaxconn)."""
    import shutil
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    serve = start_serve(env, tmp_path / "pp")
    if shutil.which("ss"):  # the listening socket's backlog is ss's Send-Q
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{serve.port}"], capture_output=True, text=True).stdout
        backlog = int(listing.split()[2])
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert backlog >= min(1024, somaxconn), listing
    body = json.dumps({"flow_run_id": "00000000-0000-4000-8000-000000000000"}).encode()
    head = (
        f"POST /submit HTTP/1.1\r\nHost: 127.0.0.1:{serve.port}\r\nAuthorization: Bearer wrong\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()

    def one(_: int) -> str:
        try:
            with socket.create_connection(("127.0.0.1", serve.port), timeout=60) as sock:
                sock.sendall(head + body)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
        except OSError as exc:
            return type(exc).__name__
        status_line, _, rest = answer.partition(b"\r\n")
        payload = rest.partition(b"\r\n\r\n")[2]
        ok = status_line.split(b" ")[1:2] == [b"401"] and json.loads(payload)["error"] == "invalid bearer token"
        return "401" if ok else answer[:200].decode(errors="replace")

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=AT_ONCE) as executor:
            outcomes = list(executor.map(one, range(BURST)))
        elapsed = time.monotonic() - started
    finally:
        serve.stop()
    failed = [o for o in outcomes if o != "401"]
    print(f"burst: {BURST} wrong-token requests, {AT_ONCE} at a time, {elapsed:.1f} s: {len(failed)} not a JSON 401")
    assert not failed, (len(failed), sorted(set(failed))[:5])
