"""Managed execution without a server: tiers, the month, compute seconds, job-variable refusals, the bootstrap, the
providers' managed variables and the process supervisor's memory limit."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import signal
import sys

import pytest
from pushpool.errors import ConfigurationError, JobRefusedError
from pushpool.managed.description import NOTE, addresses_in, addresses_line, with_lines
from pushpool.managed.job import BOOTSTRAP, PIP_PACKAGES_ENV, managed_job
from pushpool.managed.tiers import DEFAULT_TIERS, month_window, tiers_from
from pushpool.prefect_api.models import FlowRun, State, StateType
from pushpool.providers import installed_pool_types, managed_provider, provider_named
from pushpool.providers.base import JobState, JobStatus
from pushpool.providers.process import supervisor
from pushpool.settings import Settings
from pushpool.usecases.finished_runs import OVERLAP_SECONDS, TTL_SECONDS, FinishedRuns
from pushpool.usecases.usage import job_time_labels, run_spans, seconds_in_window

UTC = dt.timezone.utc
GIT = [{"prefect.deployments.steps.git_clone": {"repository": "https://example.com/x.git"}}]


def test_default_tiers_are_the_seed_pages() -> None:
    free, pro = DEFAULT_TIERS["free"], DEFAULT_TIERS["pro"]
    assert (free.concurrent_runs, free.pools, free.compute_hours) == (1, 1, 10)
    assert (pro.concurrent_runs, pro.pools, pro.compute_hours) == (10, 5, 250)
    assert free.memory_mb == pro.memory_mb == 2048 and free.max_run_time_seconds == 24 * 3600


def test_description_keeps_the_users_text_and_replaces_only_pushpools_lines() -> None:
    mine = "Team A's flows.\nAsk #data for access."
    first = with_lines(mine, [addresses_line(["203.0.113.7"])])
    assert (
        first == f"{mine}\n\n{NOTE}static outbound IP addresses of managed runs (allow these in your firewalls): "
        "203.0.113.7"
    )
    assert addresses_in(first) == ["203.0.113.7"]
    changed = with_lines(first, [addresses_line(["203.0.113.8", "2001:db8::1"])])
    assert changed.startswith(mine + "\n\n") and addresses_in(changed) == ["203.0.113.8", "2001:db8::1"]
    assert with_lines(changed, [addresses_line(["203.0.113.8", "2001:db8::1"])]) == changed  # stable: no rewrite
    assert with_lines(changed, []) == mine and with_lines(None, []) == ""
    assert with_lines("  spaced as I like\n", []) == "  spaced as I like\n"  # nothing of ours: left as it is
    assert addresses_in(f"{mine}\n{addresses_line(['not-an-ip', '198.51.100.1'])}") == ["198.51.100.1"]


def test_operator_changes_and_adds_tiers() -> None:
    tiers = tiers_from({"free": {"compute_hours": 20}, "team": {"concurrent_runs": 3, "pools": 2, "compute_hours": 50}})
    assert tiers["free"].compute_hours == 20 and tiers["free"].pools == 1
    assert tiers["team"].memory_mb == 2048
    with pytest.raises(ConfigurationError, match="tier 'free': pools"):
        tiers_from({"free": {"pools": -1}})
    with pytest.raises(ConfigurationError, match="tier 'x'"):
        tiers_from({"x": {"pools": 1}})  # a new tier names all its limits


def test_settings_pick_the_tier_and_the_workspace() -> None:
    env = {"PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    assert Settings.from_env(env).tier.name == "free"
    assert Settings.from_env(env).workspace == "127.0.0.1:4200"
    cloud = {"PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/a1/workspaces/w1"}
    assert Settings.from_env(cloud).workspace == "w1"
    tiers = {**env, "PUSHPOOL_MANAGED_TIERS": '{"pro": {"pools": 7}}', "PUSHPOOL_MANAGED_TIER": "pro"}
    assert Settings.from_env(tiers).tier.pools == 7
    with pytest.raises(ConfigurationError, match="PUSHPOOL_MANAGED_TIER: no tier 'gold'"):
        Settings.from_env({**env, "PUSHPOOL_MANAGED_TIER": "gold"})
    with pytest.raises(ConfigurationError, match="PUSHPOOL_MANAGED_TIERS"):
        Settings.from_env({**env, "PUSHPOOL_MANAGED_TIERS": "{not json"})


def test_month_window_is_the_utc_calendar_month() -> None:
    start, end = month_window(dt.datetime(2026, 12, 31, 23, 30, tzinfo=UTC))
    assert (start, end) == (dt.datetime(2026, 12, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC))
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert month_window(dt.datetime(2027, 1, 1, 1, 0, tzinfo=plus_two))[0].month == 12  # still December in UTC


def test_compute_seconds_count_only_the_part_in_the_month() -> None:
    start, end = month_window(dt.datetime(2026, 12, 15, tzinfo=UTC))
    now = dt.datetime(2026, 12, 15, 12, tzinfo=UTC)
    hour = dt.timedelta(hours=1)
    spans = [
        (start - 2 * hour, start + hour),  # began last month: one hour counts
        (now - 3 * hour, now - hour),  # two hours
        (now - hour / 2, None),  # still running: until now
        (None, None),  # never started
        (start - 5 * hour, start - hour),  # last month only
    ]
    assert seconds_in_window(spans, start, end, now=now) == pytest.approx(3.5 * 3600)


@pytest.mark.parametrize(
    ("values", "steps", "message"),
    [
        ({"image": "python:3.12"}, GIT, "'image' job variable is not allowed"),
        ({"cpu": 2}, GIT, "'cpu' are not available on managed pools"),
        ({"pip_packages": "pandas"}, GIT, "must be a list of requirement strings"),
        ({"pip_packages": [{"name": "pandas"}]}, GIT, "must be a list of requirement strings"),
        ({"pip_packages": ["pandas && curl evil"]}, GIT, "shell metacharacters ('&')"),
        ({"pip_packages": ["x$(id)"]}, GIT, "shell metacharacters"),
        ({"pip_packages": ["pandas; python_version<'3'"]}, GIT, "shell metacharacters"),
        ({"pip_packages": ["-r", "/etc/passwd"]}, GIT, "pip options are not allowed"),
        ({"pip_packages": [""]}, GIT, "is not a requirement"),
        ({"env": ["A=1"]}, GIT, "env must be an object"),
        ({}, None, "has no such pull step"),
        ({}, [{"prefect.deployments.steps.set_working_directory": {"directory": "/srv"}}], "it has: prefect."),
    ],
)
def test_bad_job_variables_are_refused(values, steps, message) -> None:
    with pytest.raises(JobRefusedError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        managed_job(values, steps)


def test_good_job_variables() -> None:
    job = managed_job({"pip_packages": ["pandas>=2,<3", "prefect-aws[s3] == 0.7.*"], "env": {"N": 3}}, GIT)
    assert job.pip_packages == ("pandas>=2,<3", "prefect-aws[s3] == 0.7.*")
    env = job.job_env()
    assert env["N"] == "3" and json.loads(env[PIP_PACKAGES_ENV]) == list(job.pip_packages)
    for step in ("prefect_aws.deployments.steps.pull_from_s3", "prefect.deployments.steps.pull_with_block"):
        assert managed_job({"image": None}, [{step: {}}]).pip_packages == ()
    # the user cannot replace the bootstrap's input
    assert managed_job({"env": {PIP_PACKAGES_ENV: '["evil"]'}}, GIT).job_env()[PIP_PACKAGES_ENV] == "[]"


def test_bootstrap_is_valid_python_that_never_uses_a_shell() -> None:
    compile(BOOTSTRAP, "<bootstrap>", "exec")
    assert "shell=True" not in BOOTSTRAP and "os.system" not in BOOTSTRAP and "--target" in BOOTSTRAP


def test_providers_give_their_managed_job_variables() -> None:
    process = managed_provider("process").managed_variables(
        bootstrap=BOOTSTRAP, env={"A": "1"}, image="img", memory_mb=2048
    )
    assert shlex.split(process["command"])[:2] == [sys.executable, "-c"]
    assert process["memory_limit_mb"] == 2048 and process["env"]["A"] == "1"
    ecs = provider_named("ecs").managed_variables(bootstrap=BOOTSTRAP, env={}, image="img:1", memory_mb=2048)
    assert (ecs["image"], ecs["memory"], ecs["cpu"]) == ("img:1", 2048, 256)
    assert shlex.split(ecs["command"])[:2] == ["python", "-c"]
    with pytest.raises(ConfigurationError, match="cannot run managed pools"):
        managed_provider("modal")
    assert "prefect:managed" in installed_pool_types("process")
    assert "prefect:managed" not in installed_pool_types(None)


@pytest.fixture
def handlers():
    """The supervisor installs SIGTERM/SIGINT handlers (it is a process of its own): give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_supervisor_kills_a_job_over_its_memory_limit(tmp_path, handlers) -> None:
    hog = "import time; data = b'x' * (300 << 20); time.sleep(10)"
    (tmp_path / "command.json").write_text(
        json.dumps({"argv": [sys.executable, "-c", hog], "cwd": str(tmp_path), "memory_limit_mb": 100})
    )
    assert supervisor.main(str(tmp_path)) == 1
    ended = json.loads((tmp_path / "exit.json").read_text())
    assert ended["exit_code"] == -9 and "exceeded its memory limit of 100 MiB" in ended["error"]


def test_supervisor_leaves_a_job_within_its_limit_alone(tmp_path, handlers) -> None:
    (tmp_path / "command.json").write_text(
        json.dumps({"argv": [sys.executable, "-c", "print(1)"], "cwd": str(tmp_path), "memory_limit_mb": 500})
    )
    assert supervisor.main(str(tmp_path)) == 0
    assert "error" not in json.loads((tmp_path / "exit.json").read_text())


def test_finished_runs_are_kept_for_the_ttl_within_their_month_and_only_finished() -> None:
    month = dt.datetime(2026, 12, 1, tzinfo=UTC)
    read_at = month + dt.timedelta(days=3)
    kept = FinishedRuns()
    ended, going = (read_at - dt.timedelta(hours=2), read_at - dt.timedelta(hours=1)), (read_at, None)
    kept.put(month, read_at, {"a": (ended,), "b": (going,), "c": (ended, going)})
    found = kept.get(month, read_at + dt.timedelta(seconds=TTL_SECONDS))
    assert found is not None and found.spans == {"a": (ended,)}  # a run with a job still going is read fresh
    assert found.fresh_since() == read_at - dt.timedelta(seconds=OVERLAP_SECONDS)
    assert kept.get(month, read_at + dt.timedelta(seconds=TTL_SECONDS + 1)) is None  # too old: read in full
    assert kept.get(month, read_at - dt.timedelta(seconds=1)) is None  # a clock that went back: read in full
    assert kept.get(dt.datetime(2027, 1, 1, tzinfo=UTC), read_at) is None  # another month
    kept.put(month, month + dt.timedelta(seconds=10), {})
    assert kept.get(month, month + dt.timedelta(seconds=20)).fresh_since() == month  # never before the month


# -- compute hours count from a job's start to its end (issue 23, item 1) --------------------------------------------

T0 = dt.datetime(2026, 12, 10, 8, 0, tzinfo=UTC)
MINUTE = dt.timedelta(minutes=1)


def _managed_run(*, state: StateType, start: float | None, end: float | None, labels: dict | None = None) -> FlowRun:
    at = lambda minutes: None if minutes is None else T0 + minutes * MINUTE  # noqa: E731
    return FlowRun(
        id="r",
        state=State(type=state, name=state.value.title(), timestamp=at(end) or T0),
        infrastructure_pid="host::tag::r_attempt-2",
        start_time=at(start),
        end_time=at(end),
        labels=labels or {},
    )


def _minutes(run: FlowRun, *, now_minutes: float = 600) -> float:
    start, end = month_window(T0)
    return seconds_in_window(run_spans(run), start, end, now=T0 + now_minutes * MINUTE) / 60


def test_the_monitor_records_a_jobs_start_then_its_end_on_the_run() -> None:
    run = _managed_run(state=StateType.PENDING, start=None, end=None)
    running = JobStatus(JobState.RUNNING, started_at=T0, accepted_at=T0)
    labels = job_time_labels(run, running)
    ((key, value),) = labels.items()
    assert key.startswith("pushpool.io/job-time.") and value == "2026-12-10T08:00:00+00:00/"
    assert job_time_labels(run.model_copy(update={"labels": labels}), running) == {}  # nothing new: no write
    ended = JobStatus(JobState.FAILED, 1, "x", started_at=T0, finished_at=T0 + 30 * MINUTE)
    assert job_time_labels(run.model_copy(update={"labels": labels}), ended) == {
        key: "2026-12-10T08:00:00+00:00/2026-12-10T08:30:00+00:00"
    }
    assert job_time_labels(run, JobStatus(JobState.PENDING, accepted_at=T0)) == {}  # not started: nothing to count


def test_compute_hours_count_the_jobs_not_the_flows_running_state() -> None:
    # A managed run: its job installed packages for 10 minutes before the flow went Running at minute 10; the first
    # attempt failed at minute 20, the run waited 60 minutes to retry, its second job ran from minute 80 to 100.
    flow_only = _managed_run(state=StateType.COMPLETED, start=10, end=100)
    assert _minutes(flow_only) == pytest.approx(90)  # no job times recorded: the flow's start → end, as before
    first = "2026-12-10T08:00:00+00:00/2026-12-10T08:20:00+00:00"
    second = "2026-12-10T09:20:00+00:00/2026-12-10T09:40:00+00:00"
    jobs = {"pushpool.io/job-time.a": first, "pushpool.io/job-time.b": second}
    with_jobs = _managed_run(state=StateType.COMPLETED, start=10, end=100, labels=jobs)
    assert _minutes(with_jobs) == pytest.approx(40)  # the bootstrap counts, the retry's wait does not


def test_a_job_still_bootstrapping_counts_before_the_flow_runs_and_overlaps_count_once() -> None:
    installing = _managed_run(
        state=StateType.PENDING, start=None, end=None, labels={"pushpool.io/job-time.a": "2026-12-10T08:00:00+00:00/"}
    )
    assert _minutes(installing, now_minutes=25) == pytest.approx(25)  # Pending, its job running for 25 minutes
    # An earlier job whose end the monitor never saw ends with the run; it is not counted twice beside the next one.
    unseen_end = {
        "pushpool.io/job-time.a": "2026-12-10T08:00:00+00:00/",
        "pushpool.io/job-time.b": "2026-12-10T08:30:00+00:00/2026-12-10T08:50:00+00:00",
    }
    crashed = _managed_run(state=StateType.CRASHED, start=None, end=60, labels=unseen_end)
    assert _minutes(crashed) == pytest.approx(60)
