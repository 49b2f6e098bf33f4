"""doctor's checks against FakePrefect (the server held to it by tests/contract): the scheduler, pins, reachability from
Prefect, a pool's automation and webhook, a provider's credentials. The real parts (a real server, a real serve, real
SDK credential chains) are in tests/integration/test_doctor.py."""

from __future__ import annotations

import datetime as dt

import pytest
from pushpool.clock import FixedClock
from pushpool.providers import base_job_template
from pushpool.usecases.deps import Deps
from pushpool.usecases.doctor import (
    FAIL,
    OK,
    ProbeAnswer,
    diagnose,
    known_bad_pins,
    scheduler_problem,
    unreachable_from_prefect,
)
from pushpool.usecases.provision import automation_body, provision_pool

from tests.fake_prefect import FakePrefect

HOUR = dt.timedelta(hours=1)


def answering(status: int | None):
    calls: list[tuple[str, str, dict, bytes]] = []

    def probe(method: str, url: str, headers, body: bytes) -> ProbeAnswer:
        calls.append((method, url, dict(headers), body))
        return ProbeAnswer(status, "" if status else "ConnectError")

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def by_check(diagnosis) -> dict[str, list]:
    found: dict[str, list] = {}
    for f in diagnosis.findings:
        found.setdefault(f.check, []).append(f)
    return found


# -- the scheduler ---------------------------------------------------------------------------------------------------


def test_a_schedule_without_runs_is_a_failing_scheduler(deps: Deps, fake: FakePrefect, clock: FixedClock, pool) -> None:
    """An active schedule whose deployment is older than the grace and has no future Scheduled run: the scheduler
    fails. Before the grace (the scheduler's first loop may be to come) nothing is said."""
    fake.add_deployment(pool.name, name="hourly", schedules=[{"schedule": {"interval": 3600}}])
    assert scheduler_problem(deps) == (0, None)  # just made: the scheduler has not had its loop yet
    clock.advance(300)
    checked, problem = scheduler_problem(deps)
    assert checked == 1 and problem is not None
    assert "scheduler made no runs for 1 of 1" in problem and "'hourly'" in problem


def test_schedules_with_their_runs_ahead_are_healthy(deps: Deps, fake: FakePrefect, clock: FixedClock, pool) -> None:
    """What the scheduler makes (Scheduled runs in the future) clears it; a paused deployment, an inactive schedule and
    runs in the past do not count either way."""
    healthy = fake.add_deployment(pool.name, name="hourly", schedules=[{"schedule": {"interval": 3600}}])
    fake.add_deployment(pool.name, name="paused", schedules=[{"schedule": {"interval": 60}}], paused=True)
    fake.add_deployment(pool.name, name="off", schedules=[{"schedule": {"interval": 60}, "active": False}])
    fake.add_deployment(pool.name, name="plain")
    clock.advance(300)
    fake.add_run(healthy, scheduled_at=clock.now() - HOUR)  # a past one alone is not enough
    assert scheduler_problem(deps)[1] is not None
    fake.add_run(healthy, scheduled_at=clock.now() + HOUR)
    assert scheduler_problem(deps) == (1, None)


def test_the_scheduler_check_is_limited_to_the_pools_asked(deps: Deps, fake: FakePrefect, clock: FixedClock) -> None:
    for name in ("mine", "other"):
        fake.add_pool(name, "process:push", base_job_template=base_job_template("process:push"))
    fake.add_deployment("other", name="elsewhere", schedules=[{"schedule": {"interval": 60}}])
    clock.advance(300)
    assert scheduler_problem(deps, pools=["mine"]) == (0, None)
    assert scheduler_problem(deps, pools=["other"])[1] is not None


# -- pins and reachability -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ({"prefect": "3.8.8", "fastapi": "0.151.0", "sqlalchemy": "2.0.58"}, ["fastapi 0.151.0 crashes Prefect 3.8.8"]),
        ({"prefect": "3.8.8", "fastapi": "0.150.0", "sqlalchemy": "2.1.0"}, ["sqlalchemy 2.1.0 makes Prefect's sched"]),
        ({"prefect": "3.9.1", "fastapi": "0.152.1", "sqlalchemy": "2.0.41"}, []),  # fastapi breaks 3.8.8 only
        ({"prefect": "3.8.8", "fastapi": "0.150.0", "sqlalchemy": "2.0.58"}, []),
        ({"prefect": None, "fastapi": "0.160.0", "sqlalchemy": "2.1.0"}, []),  # no Prefect here: nothing to say
    ],
)
def test_known_bad_pins(versions: dict, expected: list[str]) -> None:
    found = known_bad_pins(versions)
    assert [p for p, _ in found if not any(p.startswith(e) for e in expected)] == []
    assert len(found) == len(expected)
    assert all("pip install" in fix for _, fix in found)


@pytest.mark.parametrize(
    ("webhook", "prefect", "unreachable"),
    [
        ("http://127.0.0.1:4280/submit", "http://127.0.0.1:4200/api", False),
        ("http://localhost:4280/submit", "http://10.0.0.5:4200/api", True),
        ("http://127.0.0.1:4280/submit", "http://prefect:4200/api", True),  # Prefect in a container
        ("http://10.0.0.7:4280/submit", "https://api.prefect.cloud/api/accounts/a/workspaces/w", True),
        ("http://10.0.0.7:4280/submit", "http://10.0.0.5:4200/api", False),
        ("https://abc.lambda-url.us-east-1.on.aws/", "https://api.prefect.cloud/api", False),
    ],
)
def test_a_webhook_prefect_cannot_reach(webhook: str, prefect: str, unreachable: bool) -> None:
    assert (unreachable_from_prefect(webhook, prefect) is not None) is unreachable


# -- pools -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def provisioned(deps: Deps) -> str:
    provision_pool(deps, name="doc", type_name="process:push", submit_url="http://127.0.0.1:4280/submit?code=k3y")
    return "doc"


def test_a_pool_with_its_block_automation_and_submit_is_ok(deps: Deps, provisioned: str) -> None:
    probe = answering(422)
    found = by_check(diagnose(deps, pools=[provisioned], versions={}, probe=probe))
    assert [f.status for f in found["pool doc: automation"]] == [OK]
    assert [f.status for f in found["pool doc: submit"]] == [OK]
    ((method, url, headers, body),) = probe.calls
    assert (method, url, body) == ("POST", "http://127.0.0.1:4280/submit?code=k3y", b"{}")
    assert headers["Authorization"] == "Bearer t"  # the block's own headers: the token submit must accept
    assert "k3y" not in str(found)  # a URL's query (an Azure function key) is never shown


def test_a_pool_without_its_automation_fails_with_the_command_to_fix_it(
    deps: Deps, fake: FakePrefect, provisioned: str
) -> None:
    for automation in fake.find_automations(f"pushpool-{provisioned}"):
        fake.delete_automation(automation["id"])
    diagnosis = diagnose(deps, pools=[provisioned], versions={}, probe=answering(422))
    (finding,) = by_check(diagnosis)["pool doc: automation"]
    assert finding.status == FAIL and "no automation pushpool-doc" in finding.detail
    assert "pushpool work-pool create doc --type process:push" in finding.fix
    assert not diagnosis.ok


def test_a_disabled_automation_is_ok_only_with_a_serve_reading_the_stream(
    deps: Deps, fake: FakePrefect, provisioned: str
) -> None:
    from pushpool.usecases.doctor import ServeInfo

    (automation,) = fake.find_automations(f"pushpool-{provisioned}")
    block = fake.read_block_document_by_name("webhook", f"pushpool-{provisioned}")
    fake.replace_automation(automation["id"], automation_body(provisioned, block.id, "process:push", "stream"))
    alone = by_check(diagnose(deps, pools=[provisioned], versions={}, probe=answering(200)))
    assert [f.status for f in alone["pool doc: automation"]] == [FAIL]
    serve = ServeInfo(1, "http://127.0.0.1:4280", event_stream=True)
    served = by_check(diagnose(deps, pools=[provisioned], serves=[serve], versions={}, probe=answering(200)))
    assert [f.status for f in served["pool doc: automation"]] == [OK]


@pytest.mark.parametrize(
    ("status", "check", "words"),
    [
        (401, "pool doc: token", "refused the Webhook block's token"),
        (None, "pool doc: submit", "nothing answers at http://127.0.0.1:4280/submit"),
        (404, "pool doc: submit", "it is not pushpool's submit"),
    ],
)
def test_submit_refusing_or_missing_fails(deps: Deps, provisioned: str, status, check: str, words: str) -> None:
    found = by_check(diagnose(deps, pools=[provisioned], versions={}, probe=answering(status)))
    (finding,) = found[check]
    assert finding.status == FAIL and words in finding.detail and finding.fix
    assert "Bearer t" not in str(found)


def test_a_loopback_webhook_for_a_prefect_elsewhere_fails(deps: Deps, provisioned: str) -> None:
    deps.settings = deps.settings.replace(prefect_api_url="http://10.1.2.3:4200/api")
    (finding,) = by_check(diagnose(deps, pools=[provisioned], versions={}, probe=answering(422)))["pool doc: webhook"]
    assert finding.status == FAIL and "loopback" in finding.detail and "--submit-url" in finding.fix


def test_a_missing_pool_fails(deps: Deps) -> None:
    (finding,) = by_check(diagnose(deps, pools=["nope"], versions={}, probe=answering(422)))["pool nope"]
    assert finding.status == FAIL and "no such work pool" in finding.detail


def test_a_provider_without_credentials_fails_unless_the_pool_has_a_block(
    deps: Deps, fake: FakePrefect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider's own check is asked for pools whose template names no credentials block."""
    monkeypatch.delenv("DASK_COILED__TOKEN", raising=False)
    deps.pool_types = (*deps.pool_types, "coiled:push")
    provision_pool(deps, name="co", type_name="coiled:push", submit_url="http://127.0.0.1:4280/submit")
    (finding,) = by_check(diagnose(deps, pools=["co"], versions={}, probe=answering(422)))["provider coiled"]
    assert finding.status == FAIL and "no Coiled API token" in finding.detail and "DASK_COILED__TOKEN" in finding.fix
    monkeypatch.setenv("DASK_COILED__TOKEN", "x")
    (finding,) = by_check(diagnose(deps, pools=["co"], versions={}, probe=answering(422)))["provider coiled"]
    assert finding.status == OK
    monkeypatch.delenv("DASK_COILED__TOKEN")
    template = base_job_template("coiled:push")
    template["variables"]["properties"]["credentials"]["default"] = {"$ref": {"block_document_id": "b"}}
    fake.update_work_pool("co", {"base_job_template": template})
    (finding,) = by_check(diagnose(deps, pools=["co"], versions={}, probe=answering(422)))["provider coiled"]
    assert finding.status == OK and "credentials block" in finding.detail
