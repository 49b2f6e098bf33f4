"""The `pushpool` command against real servers: clear errors at start, Basic auth, status, work-pool create."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pushpool import localserver

pytestmark = pytest.mark.integration


def pushpool(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pushpool.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    env.update({"PUSHPOOL_HOME": str(tmp_path / "pp"), **extra})
    return env


def test_missing_url_is_a_clear_error_at_start(tmp_path: Path) -> None:
    result = pushpool("serve", env=base_env(tmp_path))
    assert result.returncode == 2
    assert "PREFECT_API_URL is not set" in result.stderr


def test_unreachable_server_is_a_clear_error_at_start(tmp_path: Path) -> None:
    port = localserver.free_port()
    env = base_env(tmp_path, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    result = pushpool("status", env=env)
    assert result.returncode == 2
    assert "cannot use the Prefect API" in result.stderr and "unavailable" in result.stderr


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    server = localserver.start(
        tmp_path_factory.mktemp("auth-server"), extra_env={"PREFECT_SERVER_API_AUTH_STRING": "admin:correct-horse"}
    )
    yield server.api_url
    server.stop()


def test_wrong_credentials_are_a_clear_error_and_are_not_printed(tmp_path: Path, auth_server: str) -> None:
    env = base_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING="admin:wrong-password")
    result = pushpool("status", env=env)
    assert result.returncode == 2
    assert "refused the credentials" in result.stderr
    assert "wrong-password" not in result.stderr + result.stdout


def test_basic_auth_works_end_to_end(tmp_path: Path, auth_server: str) -> None:
    env = base_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING="admin:correct-horse")
    created = pushpool("work-pool", "create", "authpool", "--type", "process:push", env=env)
    assert created.returncode == 0, created.stderr
    assert "created" in created.stdout
    again = pushpool("work-pool", "create", "authpool", "--type", "process:push", env=env)
    assert "nothing changed" in again.stdout
    assert "correct-horse" not in created.stdout + created.stderr + again.stdout + again.stderr
    status = pushpool("status", env=env)
    assert status.returncode == 0 and "no runs in flight" in status.stdout


def test_bad_pool_input_is_refused(tmp_path: Path, auth_server: str) -> None:
    env = base_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING="admin:correct-horse")
    for args, fragment in (
        (("work-pool", "create", "x", "--type", "nomad:push"), "unknown push pool type"),
        (("work-pool", "create", "x", "--type", "process"), "not a push pool type"),
        (("work-pool", "create", "prefect-x", "--type", "process:push"), "reserved"),
        (("work-pool", "create", "bad name!", "--type", "process:push"), "invalid work pool name"),
    ):
        result = pushpool(*args, env=env)
        assert result.returncode == 2 and fragment in result.stderr, result.stderr
