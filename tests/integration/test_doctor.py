"""`pushpool doctor` against real parts: the session's Prefect server (its scheduler off: a deployment with an active
schedule gets no runs, as on a server whose scheduler fails), a Prefect server with Basic auth, a real serve (in this
process) answering the pools' webhooks, boto3's real credential chain. Each misconfiguration → doctor says what is wrong
and what to do, exit code 1; healthy → all OK, exit code 0. The canary runs a real flow through a process pool."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pushpool import localserver
from pushpool.entrypoints.serve import Server
from pushpool.usecases.provision import provision_pool

from tests.helpers import PrefectHelper, make_deps, start_server

pytestmark = pytest.mark.integration
TOKEN = "doctor-webhook-token-0123456789"


def doctor(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pushpool.entrypoints.cli", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def doctor_env(tmp_path: Path, api_url: str, *, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    env.update({"PUSHPOOL_HOME": str(tmp_path / "pp"), "PREFECT_API_URL": api_url, **extra})
    return env


def lines(out: str, status: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(status)]


@pytest.fixture
def serve(prefect_api: str, tmp_path: Path):
    """A serve in this process, taking TOKEN, acting only on its own pools (none unless a test names them)."""
    deps = make_deps(prefect_api, tmp_path / "serve", webhook_tokens=(TOKEN,))
    server = Server(deps, port=localserver.free_port(), monitor_interval=3600, event_stream=False, pool_names=[])
    server.start()
    yield server
    server.stop()
    deps.orchestrator.close()


def provision(prefect_api: str, tmp_path: Path, name: str, url: str, type_name: str = "process:push") -> None:
    deps = make_deps(prefect_api, tmp_path / "provision", webhook_tokens=(TOKEN,))
    provision_pool(deps, name=name, type_name=type_name, submit_url=url, events="webhook")
    deps.orchestrator.close()


def test_a_healthy_pool_is_all_ok(prefect_api: str, prefect: PrefectHelper, serve: Server, tmp_path: Path) -> None:
    name = prefect.unique("doc-ok")
    provision(prefect_api, tmp_path, name, f"{serve.address}/submit")
    result = doctor("--pool", name, env=doctor_env(tmp_path, prefect_api))
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result.stdout, "FAIL") == []
    assert any(line.startswith("OK    prefect: Prefect 3.") for line in lines(result.stdout, "OK"))
    assert f"OK    pool {name}: automation: enabled" in result.stdout
    assert f"OK    pool {name}: submit: {serve.address}/submit answers and accepts the block's token" in result.stdout
    assert "All checks passed." in result.stdout
    assert TOKEN not in result.stdout + result.stderr

    as_json = json.loads(doctor("--pool", name, "-o", "json", env=doctor_env(tmp_path, prefect_api)).stdout)
    assert as_json["ok"] is True
    assert {"check": f"pool {name}: submit", "status": "ok"} in [
        {"check": f["check"], "status": f["status"]} for f in as_json["findings"]
    ]


def test_prefect_unreachable(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{localserver.free_port()}/api"
    result = doctor(env=doctor_env(tmp_path, api), timeout=60)
    assert result.returncode == 1
    (failure,) = lines(result.stdout, "FAIL")
    assert failure == f"FAIL  prefect: no Prefect API answers at {api}"
    assert "→ start it (`prefect server start`) or set PREFECT_API_URL" in result.stdout


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path):
    server = start_server(
        tmp_path_factory.mktemp("doctor-auth"),
        migrated_db,
        extra_env={"PREFECT_SERVER_API_AUTH_STRING": "admin:right-horse"},
    )
    yield server.api_url
    server.stop()


def test_wrong_prefect_credentials(tmp_path: Path, auth_server: str) -> None:
    env = doctor_env(tmp_path, auth_server, PREFECT_API_AUTH_STRING="admin:wrong-horse")
    result = doctor(env=env)
    assert result.returncode == 1
    assert lines(result.stdout, "FAIL") == [f"FAIL  prefect: the Prefect API at {auth_server} refused the credentials"]
    assert "PREFECT_API_AUTH_STRING" in result.stdout
    assert "wrong-horse" not in result.stdout + result.stderr
    right = doctor(env=doctor_env(tmp_path, auth_server, PREFECT_API_AUTH_STRING="admin:right-horse"))
    assert lines(right.stdout, "FAIL") == [] and right.returncode == 0, right.stdout


def test_serve_unreachable(prefect_api: str, prefect: PrefectHelper, tmp_path: Path) -> None:
    name = prefect.unique("doc-noserve")
    url = f"http://127.0.0.1:{localserver.free_port()}/submit"
    provision(prefect_api, tmp_path, name, url)
    result = doctor("--pool", name, env=doctor_env(tmp_path, prefect_api))
    assert result.returncode == 1
    (failure,) = lines(result.stdout, "FAIL")
    assert failure.startswith(f"FAIL  pool {name}: submit: nothing answers at {url}")
    assert "→ start `pushpool serve` (it listens there)" in result.stdout


def test_a_token_serve_does_not_accept(prefect_api: str, prefect: PrefectHelper, serve: Server, tmp_path: Path) -> None:
    """The pool's Webhook block holds another token than the serve takes (a pool made by another machine's serve)."""
    name = prefect.unique("doc-token")
    deps = make_deps(prefect_api, tmp_path / "other", webhook_tokens=("another-machines-token-000000",))
    provision_pool(deps, name=name, type_name="process:push", submit_url=f"{serve.address}/submit", events="webhook")
    deps.orchestrator.close()
    result = doctor("--pool", name, env=doctor_env(tmp_path, prefect_api))
    assert result.returncode == 1
    (failure,) = lines(result.stdout, "FAIL")
    assert (
        failure
        == f"FAIL  pool {name}: token: submit at {serve.address}/submit refused the Webhook block's token "
        + ("(HTTP 401)")
    )
    assert f"pushpool work-pool create {name} --type process:push" in result.stdout
    assert "another-machines-token" not in result.stdout + result.stderr and TOKEN not in result.stdout


def test_a_pool_without_its_automation(prefect_api: str, prefect: PrefectHelper, serve: Server, tmp_path: Path) -> None:
    name = prefect.unique("doc-noauto")
    provision(prefect_api, tmp_path, name, f"{serve.address}/submit")
    for automation in prefect.json("POST", "/automations/filter", json={"limit": 200}):
        if automation["name"] == f"pushpool-{name}":
            prefect.request("DELETE", f"/automations/{automation['id']}").raise_for_status()
    result = doctor("--pool", name, env=doctor_env(tmp_path, prefect_api))
    assert result.returncode == 1
    (failure,) = lines(result.stdout, "FAIL")
    assert failure.startswith(f"FAIL  pool {name}: automation: no automation pushpool-{name}: Prefect does not tell")
    assert f"→ run `pushpool work-pool create {name} --type process:push` (it adds what is missing)" in result.stdout


def test_a_provider_without_credentials(
    prefect_api: str, prefect: PrefectHelper, serve: Server, tmp_path: Path, moto_endpoint: str
) -> None:
    """An ECS pool with no credentials block, and boto3's chain finds none (no variables, no files, no metadata)."""
    name = prefect.unique("doc-ecs")
    provision(prefect_api, tmp_path, name, f"{serve.address}/submit", type_name="ecs:push")
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    missing = tmp_path / "no-such-aws-file"
    env = {**bare, "AWS_SHARED_CREDENTIALS_FILE": str(missing), "AWS_CONFIG_FILE": str(missing)}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    result = doctor("--pool", name, env=doctor_env(tmp_path, prefect_api, base=env))
    assert result.returncode == 1
    (failure,) = lines(result.stdout, "FAIL")
    assert failure.startswith(f"FAIL  provider ecs: pools {name}: no AWS credentials found")
    assert "→ run `aws configure`" in result.stdout
    with_keys = doctor("--pool", name, env=doctor_env(tmp_path, prefect_api))  # the session's fake keys
    assert lines(with_keys.stdout, "FAIL") == [] and with_keys.returncode == 0, with_keys.stdout
    assert f"OK    provider ecs: SDK installed, credentials found (pools {name})" in with_keys.stdout


def test_a_failing_scheduler(
    prefect_api: str, prefect: PrefectHelper, serve: Server, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The session's server has its scheduler off: an active schedule gets no runs — what a failing scheduler shows.
    Runs made ahead (what a working scheduler does) clear it. (In this process: the grace for a deployment just made
    is set to 0.)"""
    import datetime as dt

    from pushpool.entrypoints.cli import main
    from pushpool.usecases import doctor as doctor_usecase

    monkeypatch.setattr(doctor_usecase, "SCHEDULER_GRACE_SECONDS", 0.0)
    for key, value in doctor_env(tmp_path, prefect_api).items():
        monkeypatch.setenv(key, value)
    name = prefect.unique("doc-sched")
    provision(prefect_api, tmp_path, name, f"{serve.address}/submit")
    deployment = prefect.create_deployment(name, schedules=[{"schedule": {"interval": 3600}, "active": True}])
    time.sleep(1.0)
    assert main(["doctor", "--pool", name]) == 1
    out = capsys.readouterr().out
    (failure,) = lines(out, "FAIL")
    assert failure.startswith("FAIL  scheduler: Prefect's scheduler made no runs for 1 of 1 deployments")
    assert "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED" in out and "sqlalchemy<2.1" in out

    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    prefect.create_run(deployment, state={"type": "SCHEDULED", "state_details": {"scheduled_time": later}})
    assert main(["doctor", "--pool", name]) == 0
    assert "OK    scheduler: 1 deployments with an active schedule have their next runs" in capsys.readouterr().out


def test_serve_says_in_one_line_that_the_scheduler_fails(
    prefect_api: str, prefect: PrefectHelper, tmp_path: Path, caplog, monkeypatch
) -> None:
    from pushpool.usecases import doctor as doctor_usecase

    monkeypatch.setattr(doctor_usecase, "SCHEDULER_GRACE_SECONDS", 0.0)
    name = prefect.unique("doc-serve-sched")
    prefect.create_pool(name)
    prefect.create_deployment(name, schedules=[{"schedule": {"interval": 3600}, "active": True}])
    time.sleep(1.0)
    deps = make_deps(prefect_api, tmp_path, webhook_tokens=(TOKEN,))
    server = Server(deps, port=localserver.free_port(), monitor_interval=3600, event_stream=False, pool_names=[name])
    with caplog.at_level(logging.WARNING, logger="pushpool.serve"):
        server.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any("scheduler" in r.message for r in caplog.records):
                time.sleep(0.1)
        finally:
            server.stop()
            deps.orchestrator.close()
    (said,) = [r.getMessage() for r in caplog.records if "scheduler" in r.getMessage()]
    assert said.startswith("Prefect server: Prefect's scheduler made no runs for 1 of 1 deployments")
    assert "\n" not in said


# -- the canary ------------------------------------------------------------------------------------------------------


def test_the_canary_runs_a_flow_through_a_process_pool(own_server: str, tmp_path: Path) -> None:
    """A real serve process (event stream and webhook) and a process pool: the canary's run goes the whole way and
    each stage is printed, in order, with its time; its deployment is gone afterwards. On a server of its own: the serve
    it watches ticks every process pool of its server, and on the shared one (hundreds of pools and runs other tests
    left) a tick could outlast the canary's 120 s for the cleanup (seen twice in full runs)."""
    from tests.integration.serve_process import start_serve

    prefect_api = own_server
    prefect = PrefectHelper(prefect_api, Path(__file__).resolve().parents[1] / "flows")
    env = doctor_env(tmp_path, prefect_api)
    home = tmp_path / "pp"
    served = start_serve(env, home, "--monitor-interval", "2", event_stream=True)
    try:
        name = prefect.unique("doc-canary")
        deps = make_deps(prefect_api, tmp_path / "provision", webhook_tokens=(served.token,))
        provision_pool(deps, name=name, type_name="process:push", submit_url=f"{served.address}/submit")
        deps.orchestrator.close()
        result = doctor("--canary", name, "-o", "json", env=env, timeout=300)
    finally:
        served.stop()
    found = json.loads(result.stdout)
    canary = found["canary"]
    assert canary["ok"] is True, (canary, served.log()[-3000:])
    assert result.returncode == 0
    stages = {s["stage"]: s["seconds"] for s in canary["stages"]}
    assert list(stages) == [
        "run created",
        "event received",
        "claimed",
        "job accepted",
        "container started",
        "flow Running",
        "Completed",
        "job cleaned up",
    ]
    timed = [stages[s] for s in ("run created", "claimed", "job accepted", "flow Running", "Completed")]
    assert None not in timed and timed == sorted(timed), stages
    assert prefect.state(canary["flow_run_id"])[0] == "COMPLETED"
    deployments = prefect.json(
        "POST", "/deployments/filter", json={"deployments": {"name": {"any_": [f"canary-{name}"]}}}
    )
    assert deployments == []
    prefect.close()
