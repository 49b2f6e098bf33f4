"""What pushpool measures (issue 26), said once for every place that exports it: the series' names, kinds and labels
(:data:`CATALOGUE`), a recorder interface that does nothing by default (:class:`Metrics`), the listener that turns
run events into counts (:class:`RunEventMetrics`), and the counting wrapper around a backend (:class:`MeteredBackend`).

``pushpool serve`` exposes them on ``GET /metrics`` in Prometheus' format (``entrypoints/prometheus.py``, the only
module that imports prometheus-client); the functions print them for their platform
(``entrypoints/function_metrics.py``: CloudWatch EMF on AWS, JSON log lines on Google and Azure). Nothing here imports
an exporter, so the use-cases run where none is installed (the Lambda layer has only the aws extra).

Labels are bounded by construction: pools and providers (what the operator made), the run event's action (a fixed
set), its reason (a short word; anything else is ``other``), Prefect API route templates (ids and names replaced by
``{id}``: ``prefect_api/client.py``), backend operations (the Backend Protocol's methods).
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pushpool.usecases.events import SUBMITTED, RunEvent

COUNTER, HISTOGRAM, GAUGE = "counter", "histogram", "gauge"

RUNS = "pushpool_runs_total"
DISPATCH_LATENCY = "pushpool_dispatch_latency_seconds"
TICK_DURATION = "pushpool_monitor_tick_duration_seconds"
TICK_ERRORS = "pushpool_monitor_tick_errors_total"
IN_FLIGHT = "pushpool_runs_in_flight"
PREFECT_CALLS = "pushpool_prefect_api_calls_total"
PREFECT_ERRORS = "pushpool_prefect_api_errors_total"
BACKEND_CALLS = "pushpool_backend_calls_total"
BACKEND_ERRORS = "pushpool_backend_errors_total"

# Seconds: a submit on the event stream takes ~0.1-0.3 s, a Cloud Run job several seconds; a tick with many pools more.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TICK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    unit: str = "count"  # count | seconds: what the functions' platforms are told
    buckets: tuple[float, ...] = ()


CATALOGUE: tuple[MetricSpec, ...] = (
    MetricSpec(
        RUNS,
        COUNTER,
        ("pool", "provider", "action", "reason"),
        "What pushpool did to runs: submitted, job-started, job-ended, crashed, cancelled, retried, refused "
        "(reason: why, e.g. max-run-time, start-timeout, paused, limit)",
    ),
    MetricSpec(
        DISPATCH_LATENCY,
        HISTOGRAM,
        ("pool", "provider"),
        "Seconds from when a run was due (or created) to its job accepted by the provider",
        "seconds",
        LATENCY_BUCKETS,
    ),
    MetricSpec(TICK_DURATION, HISTOGRAM, (), "Seconds one monitor tick took", "seconds", TICK_BUCKETS),
    MetricSpec(TICK_ERRORS, COUNTER, (), "Errors a monitor tick reported (a pool, a run or a backend it could not do)"),
    MetricSpec(IN_FLIGHT, GAUGE, ("pool",), "Runs Pending, Running or Cancelling in a pool, at the last monitor tick"),
    MetricSpec(
        PREFECT_CALLS,
        COUNTER,
        ("method", "route", "status"),
        "HTTP requests to Prefect's API (each attempt; route: the path with ids replaced by {id})",
    ),
    MetricSpec(
        PREFECT_ERRORS,
        COUNTER,
        ("method", "route", "status"),
        "HTTP requests to Prefect's API that failed (status 4xx/5xx, or transport-error)",
    ),
    MetricSpec(BACKEND_CALLS, COUNTER, ("provider", "operation"), "Calls to a compute backend (submit, status, ...)"),
    MetricSpec(
        BACKEND_ERRORS,
        COUNTER,
        ("provider", "operation", "error"),
        "Calls to a compute backend that raised (error: the pushpool error class, e.g. BackendUnavailableError)",
    ),
)
SPECS: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOGUE}


class Metrics:
    """The recorder the use-cases and entry points call; this one records nothing (the default everywhere).

    ``labels`` are given by name (those of the metric's :data:`CATALOGUE` entry; missing ones are empty). An exporter
    overrides the three methods; none of them may raise into the caller.
    """

    enabled = False

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        """Add ``value`` to a counter."""

    def observe(self, name: str, labels: Mapping[str, str] | None = None, value: float = 0.0) -> None:
        """Record one observation of a histogram."""

    def set_all(self, name: str, series: Sequence[tuple[Mapping[str, str], float]]) -> None:
        """Replace every series of a gauge by ``series`` (a pool gone since is no longer shown)."""


NO_METRICS = Metrics()

_REASON = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}\Z")


def bounded_reason(reason: str | None) -> str:
    """A run event's reason as a label: the short word automations match, ``""`` when none, ``other`` for any text
    that is not such a word (an emitter's free text must not make a series per message)."""
    if not reason:
        return ""
    return reason if _REASON.match(reason) else "other"


class RunEventMetrics:
    """The listener of ``deps.events`` (``EventSink.add_listener``): each run event counts in ``pushpool_runs_total``;
    a submitted event's ``payload["dispatch_latency_seconds"]`` is observed in the dispatch latency histogram (a
    negative latency, a job accepted before its run was due, as 0).

    ``metrics`` is called for the recorder at each event, so a ``Deps`` whose recorder is replaced later (serve,
    the functions) counts into the new one.
    """

    def __init__(self, metrics: Callable[[], Metrics]) -> None:
        self._metrics = metrics

    def __call__(self, event: RunEvent) -> None:
        metrics = self._metrics()
        if not metrics.enabled:
            return
        pool, provider = event.pool or "", event.provider or ""
        metrics.inc(
            RUNS, {"pool": pool, "provider": provider, "action": event.action, "reason": bounded_reason(event.reason)}
        )
        latency = event.payload.get("dispatch_latency_seconds") if event.action == SUBMITTED else None
        if isinstance(latency, (int, float)) and not isinstance(latency, bool) and math.isfinite(latency):
            # A job accepted before its run was due (punctual dispatch's lead) was not late: 0, in the first bucket
            # (a histogram's sum must only grow, for rate() to read it).
            metrics.observe(DISPATCH_LATENCY, {"pool": pool, "provider": provider}, max(0.0, float(latency)))


# The Backend Protocol's operations (and the optional sweep of unstarted jobs): what MeteredBackend counts.
BACKEND_OPERATIONS = frozenset(
    {"submit", "find", "status", "cancel", "logs", "cleanup", "unstarted_jobs", "delete_unstarted"}
)


class MeteredBackend:
    """A backend whose operations are counted (``pushpool_backend_calls_total``, ``..._errors_total`` by provider,
    operation and error class); everything else is the backend's own (attributes, optional methods)."""

    def __init__(self, backend: Any, metrics: Callable[[], Metrics], provider: str) -> None:
        self.__dict__.update(_inner=backend, _metrics=metrics, _provider=provider)

    @property
    def unmetered(self) -> Any:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in BACKEND_OPERATIONS or not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            labels = {"provider": self._provider, "operation": name}
            metrics = self._metrics()
            metrics.inc(BACKEND_CALLS, labels)
            try:
                return value(*args, **kwargs)
            except Exception as exc:
                metrics.inc(BACKEND_ERRORS, {**labels, "error": type(exc).__name__})
                raise

        return counted

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. a test tuning the backend: the backend's own
        setattr(self._inner, name, value)


class PrefectCallCounter:
    """The Prefect client's observer (``PrefectClient.observer``): each HTTP attempt counts by method, route template
    and status; a status of 400 or more, or a transport error, also counts as an error."""

    def __init__(self, metrics: Callable[[], Metrics]) -> None:
        self._metrics = metrics

    def __call__(self, method: str, route: str, status: str) -> None:
        metrics = self._metrics()
        if not metrics.enabled:
            return
        labels = {"method": method, "route": route, "status": status}
        metrics.inc(PREFECT_CALLS, labels)
        if not status.isdigit() or int(status) >= 400:
            metrics.inc(PREFECT_ERRORS, labels)


def record_tick(metrics: Metrics, seconds: float, in_flight: Mapping[str, int] | None, errors: int) -> None:
    """One monitor tick: its duration, its errors, and the in-flight runs per pool it saw (None: it could not list
    them, the gauge keeps the last tick's)."""
    metrics.observe(TICK_DURATION, None, seconds)
    if errors:
        metrics.inc(TICK_ERRORS, None, errors)
    if in_flight is not None:
        metrics.set_all(IN_FLIGHT, [({"pool": pool}, float(count)) for pool, count in sorted(in_flight.items())])


class Accumulator(Metrics):
    """Records in memory, per metric and label values, until :meth:`take` (the functions print them once per
    invocation: ``entrypoints/function_metrics.py``). Counters are summed, histograms keep each value, gauges the last
    value."""

    enabled = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
        self._gauges: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}

    @staticmethod
    def _key(name: str, labels: Mapping[str, str] | None) -> tuple[str, tuple[tuple[str, str], ...]]:
        spec = SPECS[name]
        given = labels or {}
        return name, tuple((label, str(given.get(label) or "")) for label in spec.labels)

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + value

    def observe(self, name: str, labels: Mapping[str, str] | None = None, value: float = 0.0) -> None:
        key = self._key(name, labels)
        with self._lock:
            self._values.setdefault(key, []).append(value)

    def set_all(self, name: str, series: Sequence[tuple[Mapping[str, str], float]]) -> None:
        with self._lock:
            self._gauges[name] = [(self._key(name, labels)[1], value) for labels, value in series]

    def take(self) -> list[tuple[MetricSpec, dict[str, str], list[float]]]:
        """Everything recorded since the last take, as (metric, labels, values): a counter's sum, a histogram's
        observations, a gauge's value. The recorder is empty afterwards."""
        with self._lock:
            counts, values, gauges = self._counts, self._values, self._gauges
            self._counts, self._values, self._gauges = {}, {}, {}
        found = [(SPECS[name], dict(labels), [total]) for (name, labels), total in counts.items()]
        found += [(SPECS[name], dict(labels), observed) for (name, labels), observed in values.items()]
        for name, series in gauges.items():
            found += [(SPECS[name], dict(labels), [value]) for labels, value in series]
        return found


def flushing(flush: Callable[[], None]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A function handler's decorator: ``flush`` (the invocation's metrics, out through the platform) when the
    handler ends, however it ends (Google's and Azure's function apps)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                flush()

        return wrapper

    return decorate
