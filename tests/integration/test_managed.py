"""Managed execution end to end on a real Prefect server with the process backend: code from a git repository made
on disk, pip_packages from a package index on 127.0.0.1 (pip never reaches PyPI), the tier's limits.

The workspace is the whole (shared) server, so each test starts and ends with no managed pool on it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from pushpool.errors import InvalidRequestError
from pushpool.managed import MANAGED_POOL_TYPE, MANAGED_TAG
from pushpool.prefect_api.models import FlowRun
from pushpool.usecases.finished_runs import OVERLAP_SECONDS, TTL_SECONDS
from pushpool.usecases.managed import NOTE, quota_refusal
from pushpool.usecases.monitor import tick
from pushpool.usecases.provision import provision_pool
from pushpool.usecases.usage import JOB_TIME_LABEL, USAGE_VARIABLE, compute_seconds, run_spans, usage

from tests.helpers import PrefectHelper, make_deps, skip_ahead
from tests.local_http import LocalHTTPServer

pytestmark = pytest.mark.integration

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
PACKAGE = "pushpool-testpkg"
FLOWS = """
import time

from prefect import flow


@flow(log_prints=True)
def uses_package() -> str:
    import pushpool_testpkg

    print(f"package says {pushpool_testpkg.GREETING}")
    return pushpool_testpkg.GREETING


@flow
def hello() -> None:
    print("hello from a managed pool")


@flow
def nap(seconds: float = 1.0) -> None:
    time.sleep(seconds)


@flow
def hog() -> None:
    data = b"x" * (1200 << 20)  # written, so resident
    time.sleep(5)
    print(len(data))
"""


# -- a git repository, a wheel and a package index, all local ---------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A git repository on disk holding the flows (its name ends in .git: flow.from_source clones it with git)."""
    path = tmp_path_factory.mktemp("managed") / "flows.git"
    path.mkdir()
    (path / "managed_flows.py").write_text(FLOWS)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(path)], check=True)
    subprocess.run([*git, "-C", str(path), "add", "."], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-qm", "flows"], check=True)
    return f"file://{path}"


def _wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel of ``pushpool-testpkg`` 1.0 (one module), built without a build backend."""
    name = "pushpool_testpkg-1.0-py3-none-any.whl"
    files = {
        "pushpool_testpkg/__init__.py": b'GREETING = "hello from a local wheel"\n',
        "pushpool_testpkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: pushpool-testpkg\nVersion: 1.0\n",
        "pushpool_testpkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("pushpool_testpkg-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(directory / name, "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        whl.writestr("pushpool_testpkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return directory / name


@pytest.fixture(scope="module")
def package_index(tmp_path_factory: pytest.TempPathFactory):
    """A PEP 503 simple index on 127.0.0.1 holding the wheel; jobs' pip uses it and nothing else."""
    root = tmp_path_factory.mktemp("index")
    project = root / "simple" / PACKAGE
    project.mkdir(parents=True)
    wheel = _wheel(project)
    (project / "index.html").write_text(f'<html><body><a href="{wheel.name}">{wheel.name}</a></body></html>')
    (root / "simple" / "index.html").write_text(f'<html><body><a href="{PACKAGE}/">{PACKAGE}</a></body></html>')
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            requests.append(self.path)

    server = LocalHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    saved = {k: os.environ.get(k) for k in ("PIP_INDEX_URL", "PIP_CONFIG_FILE", "PIP_EXTRA_INDEX_URL")}
    # The operator passes these to jobs (PUSHPOOL_JOB_ENV_PASSTHROUGH, managed_deps): pip reads the local index only
    # (no config file, no extra index), so it never reaches PyPI.
    os.environ.update({"PIP_INDEX_URL": url, "PIP_CONFIG_FILE": os.devnull})
    os.environ.pop("PIP_EXTRA_INDEX_URL", None)
    yield {"url": url, "requests": requests}
    server.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# -- the workspace: no managed pool before or after a test ----------------------------------------------------------


def _delete_managed_pools(prefect: PrefectHelper) -> None:
    for pool in prefect.json("POST", "/work_pools/filter", json={}):
        if pool["type"] == MANAGED_POOL_TYPE:
            prefect.request("DELETE", f"/work_pools/{pool['name']}")


def _end_managed_runs(prefect: PrefectHelper) -> None:
    """Managed runs other tests left in flight (Pending or Running: their jobs' spans are open) would count towards
    this test's compute hours up to its clock, whatever month it skips to: they end here, as a new workspace has
    none."""
    body = {"flow_runs": {"tags": {"all_": [MANAGED_TAG]}, "end_time": {"is_null_": True}}}
    for run in prefect.json("POST", "/flow_runs/filter", json=body):
        if run["state"] and run["state"]["type"] not in FINAL:
            prefect.set_state(run["id"], "CANCELLED", force=True)


@pytest.fixture
def workspace(prefect: PrefectHelper):
    _delete_managed_pools(prefect)
    _end_managed_runs(prefect)
    yield
    _delete_managed_pools(prefect)
    _end_managed_runs(prefect)


def managed_deps(prefect: PrefectHelper, tmp_path: Path, **tier: float):
    """Deps serving prefect:managed with the process backend, in a tier called ``test`` (the free tier's limits
    unless changed)."""
    fields = {"concurrent_runs": 1, "pools": 1, "compute_hours": 10, **tier}
    return make_deps(
        prefect.api_url,
        tmp_path,
        managed_tiers={"test": fields},
        managed_tier="test",
        job_env_passthrough=("PIP_INDEX_URL", "PIP_CONFIG_FILE"),  # the package index fixture's
    )


def managed_pool(prefect: PrefectHelper, deps) -> str:
    name = prefect.unique("managed")
    provision_pool(deps, name=name, type_name=MANAGED_POOL_TYPE)
    return name


def git_deployment(prefect: PrefectHelper, pool: str, repository: str, entrypoint: str, **job_variables) -> str:
    """A deployment with the pull step flow.from_source makes for a git URL (made over REST: faster)."""
    pull = [{"prefect.deployments.steps.git_clone": {"repository": repository, "branch": None}}]
    return prefect.create_deployment(pool, entrypoint, job_variables=job_variables, pull_steps=pull)


def run_until_final(deps, prefect: PrefectHelper, pool: str, run_ids: list[str], *, timeout: float = 90, every=0.3):
    """Tick the monitor until every run is final; returns the start time of each tick."""
    ticks: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ticks.append(time.time())
        tick(deps, pools=[deps.orchestrator.read_work_pool(pool)])
        if all(prefect.state(r)[0] in FINAL for r in run_ids):
            return ticks
        time.sleep(every)
    raise AssertionError(f"runs not final after {timeout}s: {[prefect.state(r) for r in run_ids]}")


def _seconds(run: dict, key: str) -> float:
    return dt.datetime.fromisoformat(run[key]).timestamp()


# -- tests ------------------------------------------------------------------------------------------------------------


def test_flow_from_source_installs_pip_packages_and_completes(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str, package_index
) -> None:
    deps = managed_deps(prefect, tmp_path)
    pool = managed_pool(prefect, deps)
    script = (
        "from prefect import flow\n"
        f"print(flow.from_source(source={repo!r}, entrypoint='managed_flows.py:uses_package').deploy("
        f"name='with-packages', work_pool_name={pool!r}, job_variables={{'pip_packages': [{PACKAGE!r}]}}))\n"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect.api_url}
    deployed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    deployment_id = deployed.stdout.strip().splitlines()[-1]
    deployment = prefect.json("GET", f"/deployments/{deployment_id}")
    assert "git_clone" in str(deployment["pull_steps"]) and repo in str(deployment["pull_steps"])

    # A run of a git deployment without packages completes in test_concurrency_one_runs_three_one_at_a_time.
    with_packages = prefect.create_run(deployment_id)
    run_until_final(deps, prefect, pool, [with_packages], every=0.2)

    run = prefect.read_run(with_packages)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert any(f"/simple/{PACKAGE}/" in r for r in package_index["requests"])
    # The package went into the job's own directory, never into the interpreter's site-packages.
    assert subprocess.run([sys.executable, "-c", "import pushpool_testpkg"], capture_output=True).returncode != 0


def test_concurrency_one_runs_three_one_at_a_time(prefect: PrefectHelper, tmp_path: Path, workspace, repo: str) -> None:
    deps = managed_deps(prefect, tmp_path)
    pool = managed_pool(prefect, deps)
    deployment = git_deployment(prefect, pool, repo, "managed_flows.py:nap")
    runs = [prefect.create_run(deployment) for _ in range(3)]

    # Three managed runs one after another (each clones, starts a flow run process): 120 s was not enough on a loaded
    # machine (the -n 2 run left the third InfrastructurePending). What is asserted is the order, not the time.
    ticks = run_until_final(deps, prefect, pool, runs, timeout=240, every=0.5)

    found = sorted((prefect.read_run(r) for r in runs), key=lambda r: _claimed(prefect, r["id"]))
    assert [r["state"]["type"] for r in found] == ["COMPLETED"] * 3
    for earlier, later in itertools.pairwise(found):
        freed = _seconds(earlier, "end_time")
        claimed = _claimed(prefect, later["id"])
        assert claimed >= freed, "two managed runs were in flight at once"
        # Claimed by the first tick that started after the slot freed (or by the one already running then).
        next_ticks = [t for t in ticks if t > freed]
        assert next_ticks and claimed <= next_ticks[min(1, len(next_ticks) - 1)], (freed, claimed, ticks)
    for run in found:  # waiting runs were never failed or moved for the limit: straight from Scheduled to Pending
        assert [t for t, _ in prefect.states(run["id"])][:2] == ["SCHEDULED", "PENDING"]


def _claimed(prefect: PrefectHelper, run_id: str) -> float:
    history = prefect.json("GET", "/flow_run_states/", params={"flow_run_id": run_id})
    return min(dt.datetime.fromisoformat(s["timestamp"]).timestamp() for s in history if s["type"] == "PENDING")


def test_second_managed_pool_refused_and_one_made_behind_our_back_not_served(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str
) -> None:
    deps = make_deps(prefect.api_url, tmp_path)  # the free tier: one managed pool
    first = managed_pool(prefect, deps)
    with pytest.raises(InvalidRequestError, match="allows 1 managed work pool"):
        provision_pool(deps, name=prefect.unique("managed"), type_name=MANAGED_POOL_TYPE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    env.update({"PREFECT_API_URL": prefect.api_url, "PUSHPOOL_HOME": str(tmp_path / "pp")})
    cli = [sys.executable, "-m", "pushpool.entrypoints.cli"]
    refused = subprocess.run(
        [*cli, "work-pool", "create", "another", "--type", MANAGED_POOL_TYPE, "--submit-url", "http://127.0.0.1:9/s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "free tier" in refused.stderr and "allows 1 managed work pool" in refused.stderr
    shown = subprocess.run([*cli, "usage", "-o", "json"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["pools"] == [first] and json.loads(shown.stdout)["compute_hours_limit"] == 10
    assert [p.name for p in deps.orchestrator.filter_work_pools() if p.type == MANAGED_POOL_TYPE] == [first]

    sneaky = prefect.unique("sneaky")
    prefect.create_pool(sneaky, MANAGED_POOL_TYPE)  # over the REST API, as `prefect work-pool create` would
    run_id = prefect.create_run(git_deployment(prefect, sneaky, repo, "managed_flows.py:hello"))
    # The managed pools only: a tick over the shared server's hundreds of pools would dispatch other tests' runs and
    # leave Prefect's background writes (one per get_scheduled_flow_runs) stalling SQLite for the tests after it.
    managed = [p for p in deps.orchestrator.filter_work_pools() if p.type == MANAGED_POOL_TYPE]
    report = tick(deps, pools=managed)
    assert sneaky not in report.served and first in report.served
    assert any(sneaky in note and "allows 1 managed work pool" in note for note in report.notes)
    assert prefect.json("GET", f"/work_pools/{sneaky}")["description"].startswith(NOTE)
    assert prefect.state(run_id) == ("SCHEDULED", "Scheduled")
    assert report.managed["pools"] == [first] and report.managed["pools_not_served"] == [sneaky]
    assert prefect.json("GET", f"/variables/name/{USAGE_VARIABLE}")["value"]["pools_not_served"] == [sneaky]

    prefect.request("DELETE", f"/work_pools/{first}")  # room again: the pool is served and its note goes
    tick(deps, pools=[deps.orchestrator.read_work_pool(sneaky)])
    assert not prefect.json("GET", f"/work_pools/{sneaky}")["description"]
    assert prefect.state(run_id)[0] != "SCHEDULED"


def test_compute_hours_used_up_new_runs_not_started_with_the_reason(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str
) -> None:
    deps = managed_deps(prefect, tmp_path, compute_hours=0.0003)  # a little over one second
    pool = managed_pool(prefect, deps)
    deployment = git_deployment(prefect, pool, repo, "managed_flows.py:hello")
    seeded = prefect.create_run(deployment, tags=[MANAGED_TAG])  # history: a run pushpool ran for two seconds
    prefect.set_state(seeded, "RUNNING", force=True)
    time.sleep(2)
    prefect.set_state(seeded, "COMPLETED", force=True)
    assert usage(deps).compute_hours_used >= 0.0005

    run_id = prefect.create_run(deployment)
    tick(deps, pools=[deps.orchestrator.read_work_pool(pool)])
    run = prefect.read_run(run_id)
    assert run["state"]["type"] == "CANCELLED"
    assert "compute hours" in run["state"]["message"] and "0.0003" in run["state"]["message"]
    assert run["infrastructure_pid"] is None and not list((deps.settings.process_dir).glob(f"{run_id}_*"))

    # Next month (an injected clock): the history is last month's, new runs may start again.
    now = dt.datetime.now(dt.timezone.utc)
    next_month = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1, hour=0, minute=5)
    skip_ahead(deps, (next_month - now).total_seconds())
    assert usage(deps).compute_hours_used == 0 and quota_refusal(deps) is None


def test_runs_of_a_deleted_pool_still_count(prefect: PrefectHelper, tmp_path: Path, workspace, repo: str) -> None:
    """Deleting a managed pool (and making another) does not give its compute hours back: the runs pushpool started
    carry the tag compute hours count, which Prefect keeps when it unlinks them from the deleted pool."""
    deps = managed_deps(prefect, tmp_path)
    pool = managed_pool(prefect, deps)
    run_id = prefect.create_run(git_deployment(prefect, pool, repo, "managed_flows.py:hello"))
    run_until_final(deps, prefect, pool, [run_id])
    run = prefect.read_run(run_id)
    assert run["state"]["type"] == "COMPLETED" and MANAGED_TAG in run["tags"]
    ran = _seconds(run, "end_time") - _seconds(run, "start_time")
    before = compute_seconds(managed_deps(prefect, tmp_path))  # fresh deps: nothing kept from earlier readings
    assert before >= ran > 0

    prefect.request("DELETE", f"/work_pools/{pool}")
    assert prefect.read_run(run_id)["work_queue_id"] is None  # Prefect no longer ties the run to a pool
    again = managed_deps(prefect, tmp_path)
    managed_pool(prefect, again)  # a new pool in its place: the workspace's hours are the same
    assert compute_seconds(again) >= before


def test_compute_hours_count_the_job_from_its_start_to_its_end(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str
) -> None:
    """Issue 23, item 1: what the operator pays for is the job, bootstrap included (the git clone, the engine's start),
    not the flow's Running state: the monitor records the job's start and end on the run, and usage counts them."""
    deps = managed_deps(prefect, tmp_path)
    pool = managed_pool(prefect, deps)
    run_id = prefect.create_run(git_deployment(prefect, pool, repo, "managed_flows.py:hello"))
    run_until_final(deps, prefect, pool, [run_id])
    deadline = time.monotonic() + 30
    while True:  # the engine's process ends a moment after the run: a tick then records the job's end
        tick(deps, pools=[deps.orchestrator.read_work_pool(pool)])
        run = prefect.read_run(run_id)
        recorded = [v for k, v in run["labels"].items() if k.startswith(JOB_TIME_LABEL)]
        if (recorded and not recorded[0].endswith("/")) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(recorded) == 1 and recorded[0].count("/") == 1
    began, ended = (dt.datetime.fromisoformat(t) for t in recorded[0].split("/"))
    assert began.timestamp() < _seconds(run, "start_time")  # the job began before the flow ran (the bootstrap)
    assert ended.timestamp() >= _seconds(run, "end_time") - 1  # and ended after it (to the second)
    assert run_spans(FlowRun.model_validate(run)) == ((began, ended),)


def test_finished_runs_are_kept_a_few_minutes_and_the_count_stays_exact(
    prefect: PrefectHelper, tmp_path: Path, workspace
) -> None:
    """The submit path's compute-hours check reads the month's finished runs once per TTL: meanwhile two small reads
    (what ended since, what is going) give the same count as a full reading; a run deleted in between stays counted
    until the TTL runs out (what usecases/finished_runs.py documents)."""
    deps = managed_deps(prefect, tmp_path)
    pool = managed_pool(prefect, deps)
    deployment = prefect.create_deployment(pool, "flows.py:hello")

    def ran(seconds: float) -> str:
        run_id = prefect.create_run(deployment, tags=[MANAGED_TAG])
        prefect.set_state(run_id, "RUNNING", force=True)
        time.sleep(seconds)
        prefect.set_state(run_id, "COMPLETED", force=True)
        return run_id

    deleted = ran(1.0)
    compute_seconds(deps)  # the full reading, kept
    ran(1.0)  # ends after it: must count at once
    sent: list[dict] = []
    deps.orchestrator._http.event_hooks["request"].append(
        lambda request: sent.append(json.loads(request.content or b"{}"))
    )
    now = deps.clock.now()
    exact = pytest.approx(compute_seconds(managed_deps(prefect, tmp_path), now=now), abs=1e-6)  # summed in any order
    assert compute_seconds(deps, now=now) == exact
    assert len(sent) == 3  # what ended since the reading, what is going and what is Pending; not the month's
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    since = dt.datetime.fromisoformat(sent[0]["flow_runs"]["end_time"]["after_"])
    assert since > month or now - month < dt.timedelta(seconds=OVERLAP_SECONDS + 60)

    run = prefect.read_run(deleted)
    seconds = _seconds(run, "end_time") - _seconds(run, "start_time")
    prefect.request("DELETE", f"/flow_runs/{deleted}")
    now = deps.clock.now()
    kept = compute_seconds(deps, now=now) - compute_seconds(managed_deps(prefect, tmp_path), now=now)
    assert kept == pytest.approx(seconds, abs=0.01)  # within the TTL the deleted run still counts
    skip_ahead(deps, TTL_SECONDS + 1)
    later = deps.clock.now()
    assert compute_seconds(deps, now=later) == pytest.approx(
        compute_seconds(managed_deps(prefect, tmp_path), now=later), abs=1e-6
    )


def test_run_over_its_memory_limit_crashes_saying_so(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str
) -> None:
    deps = managed_deps(prefect, tmp_path, memory_mb=600)
    pool = managed_pool(prefect, deps)
    run_id = prefect.create_run(git_deployment(prefect, pool, repo, "managed_flows.py:hog"))
    run_until_final(deps, prefect, pool, [run_id])
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED"
    assert "exceeded its memory limit of 600 MiB" in state["message"]


def test_missing_pip_package_crashes_with_pips_message_once(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str, package_index
) -> None:
    deps = managed_deps(prefect, tmp_path)
    pool = managed_pool(prefect, deps)
    deployment = git_deployment(
        prefect, pool, repo, "managed_flows.py:hello", pip_packages=["pushpool-no-such-package==9.9"]
    )
    run_id = prefect.create_run(deployment)
    run_until_final(deps, prefect, pool, [run_id])
    for _ in range(3):  # a few more ticks: nothing starts it again
        tick(deps, pools=[deps.orchestrator.read_work_pool(pool)])
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED"
    assert "No matching distribution found for pushpool-no-such-package==9.9" in state["message"]
    assert "installing pip_packages failed" in state["message"]
    assert [t for t, _ in prefect.states(run_id)].count("PENDING") == 2  # one claim (Pending, InfrastructurePending)


@pytest.mark.parametrize(
    ("job_variables", "pull", "expected"),
    [
        ({"pip_packages": "pandas"}, True, "pip_packages must be a list of requirement strings"),
        ({"pip_packages": ["pandas", 3]}, True, "pip_packages must be a list of requirement strings"),
        ({"pip_packages": ["requests; touch /tmp/owned"]}, True, "contains shell metacharacters"),
        ({"pip_packages": ["--index-url=http://evil/simple", "x"]}, True, "pip options are not allowed"),
        ({"image": "python:3.12"}, True, "the 'image' job variable is not allowed"),
        ({}, False, "has no such pull step"),
    ],
)
def test_bad_input_refused_on_the_run_nothing_executed(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str, job_variables, pull, expected
) -> None:
    deps = managed_deps(prefect, tmp_path)
    # Made over REST with no template (Prefect then validates no job variable): every check is pushpool's own.
    pool = prefect.unique("managed")
    prefect.create_pool(pool, MANAGED_POOL_TYPE, base_job_template={})
    if pull:
        deployment = git_deployment(prefect, pool, repo, "managed_flows.py:hello")
    else:
        deployment = prefect.create_deployment(pool, "managed_flows.py:hello", pull_steps=[])
    run_id = prefect.create_run(deployment, job_variables=job_variables)
    tick(deps, pools=[deps.orchestrator.read_work_pool(pool)])
    run = prefect.read_run(run_id)
    assert run["state"]["type"] == "CRASHED"
    assert (
        run["state"]["message"].startswith("pushpool refused to start this run") and expected in run["state"]["message"]
    )
    assert run["infrastructure_pid"] is None
    assert not (deps.settings.process_dir).exists() or not list(deps.settings.process_dir.iterdir())


def test_prefect_refuses_pip_packages_of_the_wrong_type_on_pushpools_template(
    prefect: PrefectHelper, tmp_path: Path, workspace, repo: str
) -> None:
    pool = managed_pool(prefect, managed_deps(prefect, tmp_path))
    deployment = git_deployment(prefect, pool, repo, "managed_flows.py:hello")
    response = prefect.request(
        "POST", f"/deployments/{deployment}/create_flow_run", json={"job_variables": {"pip_packages": "pandas"}}
    )
    assert response.status_code == 422 and "pip_packages" in response.text


def test_unreachable_git_url_crashes_with_gits_message(prefect: PrefectHelper, tmp_path: Path, workspace) -> None:
    deps = managed_deps(prefect, tmp_path)
    pool = managed_pool(prefect, deps)
    missing = f"file://{tmp_path}/no-such-repo.git"
    run_id = prefect.create_run(git_deployment(prefect, pool, missing, "managed_flows.py:hello"))
    run_until_final(deps, prefect, pool, [run_id])
    # Prefect's runner crashes the run with only the exit code; the monitor adds what the job printed last.
    deadline = time.monotonic() + 60  # the monitor sees the exit once the job process ends: slow under load
    while "git stderr" not in prefect.read_run(run_id)["state"]["message"] and time.monotonic() < deadline:
        tick(deps, pools=[deps.orchestrator.read_work_pool(pool)])
        time.sleep(0.3)
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED", state
    assert "Failed to clone repository" in state["message"] and "git stderr" in state["message"], state["message"]
    assert "the repository exists" in state["message"]  # git's own words
