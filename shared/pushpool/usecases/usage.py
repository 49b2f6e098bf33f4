"""usage: what a workspace's managed runs have used — compute hours this month (UTC), runs in flight against the
concurrency limit, managed pools against the pool limit — from the orchestration API's own run history.

Compute hours are what the operator pays for: the sum, over the workspace's managed runs, of the part of each run's
jobs' start → end (now, for a job still going) that falls in the calendar month of the clock (UTC). A job's times are
recorded on its run by the monitor, which sees them in the job's status (``record_job_time``: a label
``pushpool.io/job-time.<job>`` = ``<start>/<end>``, ISO 8601, the end empty while it runs); a job's package install and
pull steps count, the waits between a run's retries (no job) do not. A run with no such label (its job's times never
seen: no monitor ran while the job was visible) counts from the flow's start to its end, as before. The runs are those
pushpool tagged ``pushpool:managed`` when it started them (``usecases/submit.py``): a tag is the run's own, so deleting
(and recreating) a managed pool does not take its runs out of the count, as a filter on the pool would. Three filtered
reads give them: those that ended this month, those that started and have not ended, and those Pending (a job
bootstrapping before the flow starts); all are paged 200 at a time. The
month's finished runs are then kept for a few minutes (``usecases/finished_runs.py``: meanwhile only what ended since
and what is going are read; ``bench/managed_usage.py`` measures both paths). A run that crosses the line while
running is left to finish (see ``usecases/managed.py``): its whole time counts, so a month can end a little over its
hours.

Example:
    >>> import datetime as dt
    >>> start = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    >>> seconds_in_window([(start - dt.timedelta(hours=1), start + dt.timedelta(hours=2))], start,
    ...                   start + dt.timedelta(days=31), now=start + dt.timedelta(hours=3))
    7200.0
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pushpool.errors import PushpoolError
from pushpool.managed import MANAGED_POOL_TYPE, MANAGED_TAG
from pushpool.managed.description import addresses_in
from pushpool.managed.tiers import Tier, month_window
from pushpool.prefect_api.models import IN_FLIGHT_STATES, FlowRun, StateType, WorkPool
from pushpool.providers import managed_provider
from pushpool.providers.base import JobStatus
from pushpool.usecases.deps import Deps
from pushpool.usecases.finished_runs import Span, Spans

log = logging.getLogger("pushpool.usecases.usage")

USAGE_VARIABLE = "pushpool_managed_usage"  # a Prefect variable: users see their usage in Prefect's own UI
JOB_TIME_LABEL = "pushpool.io/job-time."  # + a digest of the job's id (infrastructure_pid): "<start>/<end>"
_MANAGED = {"work_pools": {"type": {"any_": [MANAGED_POOL_TYPE]}}}
_TAGGED = {"tags": {"all_": [MANAGED_TAG]}}


@dataclass(frozen=True)
class Usage:
    """One workspace's managed usage at one moment."""

    workspace: str
    tier: str
    month: str  # YYYY-MM, UTC
    compute_hours_used: float
    compute_hours_limit: float
    runs_in_flight: int
    concurrency_limit: int
    pools: list[str]  # the managed pools pushpool serves (oldest first)
    pool_limit: int
    pools_not_served: list[str] = field(default_factory=list)  # over the pool limit: created behind pushpool's back
    memory_mb: int = 0
    max_run_time_seconds: int = 0
    # Where managed runs' traffic comes from (ECS with --static-ips): the addresses users allow in their firewalls (the
    # monitor's report and the managed pools' descriptions carry them too).
    static_outbound_ips: list[str] | None = None

    @property
    def compute_hours_left(self) -> float:
        return max(0.0, self.compute_hours_limit - self.compute_hours_used)

    @property
    def exhausted(self) -> bool:
        return self.compute_hours_used >= self.compute_hours_limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compute_hours_left": round(self.compute_hours_left, 4)}

    def summary(self) -> str:
        not_served = (
            f" (not served, over the limit: {', '.join(self.pools_not_served)})" if self.pools_not_served else ""
        )
        return "\n".join(
            [
                f"Managed execution (prefect:managed pools) of workspace {self.workspace}, {self.month} (UTC)",
                f"  limits          tier {self.tier!r}: this pushpool's settings, set by whoever runs it "
                "(PUSHPOOL_MANAGED_TIER, PUSHPOOL_MANAGED_TIERS)",
                f"  compute hours   {self.compute_hours_used:.2f} used of {self.compute_hours_limit:g}, "
                f"{self.compute_hours_left:.2f} left",
                f"  runs in flight  {self.runs_in_flight} of {self.concurrency_limit}",
                f"  managed pools   {len(self.pools)} of {self.pool_limit}"
                + (f": {', '.join(self.pools)}" if self.pools else "")
                + not_served,
                f"  per run         {self.memory_mb} MiB of memory, at most {self.max_run_time_seconds / 3600:g} h",
            ]
            + (
                [f"  outbound IPs    {', '.join(self.static_outbound_ips)} (allow these in your firewalls)"]
                if self.static_outbound_ips
                else []
            )
        )


def seconds_in_window(
    spans: Iterable[tuple[dt.datetime | None, dt.datetime | None]],
    start: dt.datetime,
    end: dt.datetime,
    *,
    now: dt.datetime,
) -> float:
    """The seconds of ``spans`` (run start → run end, None: still going, i.e. until ``now``) inside [start, end)."""
    total = 0.0
    for began, ended in spans:
        if began is None:
            continue
        stop = min(ended or now, end, now)
        total += max(0.0, (stop - max(began, start)).total_seconds())
    return total


def compute_seconds(deps: Deps, *, now: dt.datetime | None = None) -> float:
    """Seconds of managed runs in the calendar month of ``now`` (the clock's by default), from Prefect's run history:
    the runs pushpool tagged :data:`MANAGED_TAG` when it started them (still counted once their pool is deleted).

    The month's finished runs are kept for a few minutes (``usecases/finished_runs.py``, which says what that can let
    through); meanwhile only the runs that ended since and those still going are read."""
    now = now or deps.clock.now()
    start, end = month_window(now)
    kept = deps.finished_runs.get(start, now)
    since = kept.fresh_since() if kept is not None else start
    fresh = _spans(deps, since, now)
    if kept is None:
        deps.finished_runs.put(start, now, fresh)
    spans = {**kept.spans, **fresh} if kept is not None else fresh
    return seconds_in_window((span for own in spans.values() for span in own), start, end, now=now)


def _spans(deps: Deps, since: dt.datetime, now: dt.datetime) -> dict[str, Spans]:
    """Managed runs that ended at or after ``since``, those started and not ended, and those Pending (a job may be
    installing packages before the flow starts): run id → its spans (:func:`run_spans`)."""
    client = deps.orchestrator
    ended = client.filter_flow_runs(
        {"flow_runs": {**_TAGGED, "end_time": {"after_": since.isoformat()}}, "sort": "ID_DESC"}
    )
    going = client.filter_flow_runs(
        {"flow_runs": {**_TAGGED, "end_time": {"is_null_": True}, "start_time": {"before_": now.isoformat()}}}
    )
    pending = client.filter_flow_runs(
        {
            "flow_runs": {
                **_TAGGED,
                "end_time": {"is_null_": True},
                "state": {"type": {"any_": [StateType.PENDING.value]}},
            }
        }
    )
    return {run.id: run_spans(run) for run in [*ended, *going, *pending]}


def run_spans(run: FlowRun) -> Spans:
    """The run's compute spans: its jobs' start → end as the monitor recorded them (a job whose end it did not see
    ends with the run), merged where they overlap so no second counts twice; else the flow's own start → end."""
    jobs = []
    for key, value in run.labels.items():
        if key.startswith(JOB_TIME_LABEL) and isinstance(value, str):
            began, _, ended = value.partition("/")
            start, end = _time(began), _time(ended)
            if start is not None:
                jobs.append((start, end or run.end_time))
    if not jobs:
        return ((run.start_time, run.end_time),)
    merged: list[Span] = []
    for start, end in sorted(jobs, key=lambda span: span[0]):
        last = merged[-1] if merged else None
        if last is not None and (last[1] is None or start <= last[1]):  # overlaps the previous one: one span
            merged[-1] = (last[0], None if last[1] is None or end is None else max(last[1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def job_time_labels(run: FlowRun, status: JobStatus) -> dict[str, str]:
    """The label recording the times of the run's current job (its ``infrastructure_pid``), when ``status`` says more
    than the run's labels already do; empty when there is nothing (new) to record."""
    if not run.infrastructure_pid or status.started_at is None:
        return {}
    key = JOB_TIME_LABEL + hashlib.sha256(run.infrastructure_pid.encode()).hexdigest()[:16]
    ended = status.finished_at if not status.state.is_alive else None
    value = f"{_iso(status.started_at)}/{_iso(ended) if ended else ''}"
    return {} if run.labels.get(key) == value else {key: value}


def record_job_time(deps: Deps, run: FlowRun, status: JobStatus) -> None:
    """Write the run's current job's times on the run (the monitor, for managed runs; best effort: without them the
    flow's own start → end counts)."""
    labels = job_time_labels(run, status)
    if not labels:
        return
    try:
        deps.orchestrator.update_flow_run_labels(run.id, labels)
    except PushpoolError as exc:
        log.warning("run %s: its job's times could not be recorded: %s", run.id, exc.one_line())


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _time(text: str) -> dt.datetime | None:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def runs_in_flight(deps: Deps) -> int:
    """Managed runs of the workspace holding (or about to hold) a job."""
    body = {**_MANAGED, "flow_runs": {"state": {"type": {"any_": [s.value for s in IN_FLIGHT_STATES]}}}}
    return deps.orchestrator.count_flow_runs(body)


def managed_pools(deps: Deps, pools: list[WorkPool] | None = None) -> list[WorkPool]:
    """The workspace's managed pools, oldest first (the order in which the pool limit serves them)."""
    pools = deps.orchestrator.filter_work_pools() if pools is None else pools
    found = [p for p in pools if p.type == MANAGED_POOL_TYPE]
    far = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    return sorted(found, key=lambda p: (p.created or far, p.name))


def served_and_refused(tier: Tier, pools: list[WorkPool]) -> tuple[list[WorkPool], list[WorkPool]]:
    """The managed pools within the tier's pool limit (the oldest) and those over it (``pools`` oldest first)."""
    return pools[: tier.pools], pools[tier.pools :]


def static_outbound_ips(deps: Deps) -> list[str] | None:
    """The static outbound addresses of managed runs: asked of the managed provider's provisioner for the operator's
    template pool (ECS provisioned with ``--static-ips``); None when there are none to tell. One cloud read: the CLI
    asks, the monitor's tick does not."""
    name = deps.settings.managed_template_pool
    if not name:
        return None
    provider = managed_provider(deps.settings.managed_backend)
    if provider.provisioner is None:
        return None
    try:
        provisioner = provider.create_provisioner()
        addresses = getattr(provisioner, "static_addresses", None)
        return list(addresses(name)) if addresses is not None else None
    except PushpoolError as exc:  # no credentials or region here: the rest of the usage still stands
        log.warning("static outbound IP addresses unknown: %s", exc.one_line())
        return None


def recorded_static_ips(deps: Deps, pools: list[WorkPool]) -> list[str] | None:
    """The static outbound addresses recorded on the operator's template pool (``pools``: every pool, as read) by its
    provisioning (``managed/description.py``); None when there are none. No read: the monitor's tick uses these."""
    name = deps.settings.managed_template_pool
    found = next((addresses_in(p.description) for p in pools if name and p.name == name), None)
    return found or None


def usage(deps: Deps, *, pools: list[WorkPool] | None = None, addresses: bool = False) -> Usage:
    """The workspace's usage now (``pools``: all pools, if the caller has read them already; ``addresses``: the static
    outbound IP addresses as the cloud has them, a read of the cloud — else those recorded on the template pool)."""
    tier, now = deps.settings.tier, deps.clock.now()
    pools = deps.orchestrator.filter_work_pools() if pools is None else pools
    served, refused = served_and_refused(tier, managed_pools(deps, pools))
    return Usage(
        workspace=deps.settings.workspace,
        tier=tier.name,
        month=f"{now.astimezone(dt.timezone.utc):%Y-%m}",
        compute_hours_used=round(compute_seconds(deps, now=now) / 3600, 6),
        compute_hours_limit=tier.compute_hours,
        runs_in_flight=runs_in_flight(deps),
        concurrency_limit=tier.concurrent_runs,
        pools=[p.name for p in served],
        pool_limit=tier.pools,
        pools_not_served=[p.name for p in refused],
        memory_mb=tier.memory_mb,
        max_run_time_seconds=tier.max_run_time_seconds,
        static_outbound_ips=static_outbound_ips(deps) if addresses else recorded_static_ips(deps, pools),
    )


def publish(deps: Deps, found: Usage) -> None:
    """Write the usage into the Prefect variable ``pushpool_managed_usage`` (best effort: a report, not a state)."""
    value = {k: v for k, v in found.as_dict().items() if k not in ("memory_mb", "max_run_time_seconds")}
    value["compute_hours_used"] = round(found.compute_hours_used, 2)
    value["compute_hours_left"] = round(found.compute_hours_left, 2)
    try:
        deps.orchestrator.write_variable(USAGE_VARIABLE, value)
    except Exception as exc:  # noqa: BLE001 - the variable is a courtesy to users; never fail the tick for it
        log.warning("could not write the usage variable: %s", type(exc).__name__)
