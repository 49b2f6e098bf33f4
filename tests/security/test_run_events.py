"""The hostile (or careless) deployment author and pushpool's run events (issue 26): events are published to
Prefect, where every API user reads them, so no environment value, no credential, no job output and no rejected
job variable's value is ever in one — whatever the job variables hold and whatever way the run ends."""

from __future__ import annotations

import json

from pushpool.clock import FixedClock
from pushpool.prefect_api.models import StateType
from pushpool.providers import base_job_template
from pushpool.providers.base import JobHandle
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.event_publisher import to_prefect
from pushpool.usecases.monitor import tick
from pushpool.usecases.submit import submit_run

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend
from tests.unit.usecases.support import POOL, ready_run

OPERATOR_KEY = "pnu_operators_key_never_in_an_event"
SECRETS = {"DB_PASSWORD": "hunter2-db", "GITHUB_TOKEN": "ghp_never_in_an_event", "PREFECT_API_KEY": "pnu_authors_key"}


def _deps() -> tuple[Deps, FakePrefect, LatencyBackend, FixedClock]:
    clock = FixedClock()
    fake, backend = FakePrefect(clock=clock), LatencyBackend(clock=clock)
    settings = Settings.of(
        prefect_api_url="http://127.0.0.1:1/api",
        prefect_api_key=OPERATOR_KEY,
        webhook_tokens=("t",),
        submit_url="http://127.0.0.1:2/submit",
        pool_types=("process:push",),
    )
    deps = Deps(settings=settings, orchestrator=fake, clock=clock)  # type: ignore[arg-type]
    deps._backends["process"] = backend
    fake.add_pool(POOL, "process:push", base_job_template=base_job_template("process:push"))
    return deps, fake, backend, clock


def _published(deps: Deps) -> str:
    return json.dumps([to_prefect(e) for e in deps.events.drain()])


def test_no_secret_reaches_an_event_whatever_becomes_of_the_run() -> None:
    deps, fake, backend, clock = _deps()
    pool = fake.read_work_pool(POOL)
    hostile = {"env": SECRETS, "command": f"sh -c 'echo {SECRETS['DB_PASSWORD']}'", "max_run_time_seconds": 60}
    failing, overdue = ready_run(fake, job_variables=hostile), ready_run(fake, job_variables=hostile)
    for run in (failing, overdue):
        assert submit_run(deps, run, pool).outcome == "submitted"
    failed_job = fake.run(failing.id).infrastructure_pid
    backend.exit(JobHandle("fake", failed_job), 1, [f"password is {SECRETS['DB_PASSWORD']}", OPERATOR_KEY])
    assert fake.propose_state(overdue.id, StateType.RUNNING).accepted
    clock.advance(61)
    tick(deps)
    # a job variable that does not render, holding a secret: crashed, reason "template", value not repeated
    broken = ready_run(fake, job_variables={"max_run_time_seconds": SECRETS["GITHUB_TOKEN"]})
    assert submit_run(deps, broken, pool).outcome == "crashed"
    assert fake.run(broken.id).state_type is StateType.CRASHED

    published = _published(deps)
    for action in ("submitted", "crashed", "job-ended"):
        assert f'"pushpool.run.{action}"' in published
    assert '"pushpool.reason": "template"' in published and '"pushpool.reason": "max-run-time"' in published
    for value in (OPERATOR_KEY, *SECRETS.values()):
        assert value not in published
