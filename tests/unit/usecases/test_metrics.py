"""The metrics (issue 26, usecases/metrics.py): run events counted by the listener, Prefect API calls counted by route
template (bounded labels), backend calls counted by the wrapper Deps puts around a backend, a monitor tick measured —
read back through serve's Prometheus exposition (parsed by prometheus-client's own parser) and through the functions'
EMF and log lines."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pushpool.clock import FixedClock
from pushpool.entrypoints.function_metrics import EmfMetrics, LogMetrics
from pushpool.entrypoints.http import timed_tick
from pushpool.entrypoints.prometheus import PrometheusMetrics
from pushpool.errors import BackendUnavailableError, ObjectNotFoundError
from pushpool.prefect_api.client import PrefectClient, route_template
from pushpool.prefect_api.models import WorkPool
from pushpool.providers.base import SweepsUnstartedJobs
from pushpool.usecases import metrics as m
from pushpool.usecases.deps import Deps
from pushpool.usecases.events import RunEvent

from tests.fake_prefect import FakePrefect
from tests.fakes import LatencyBackend


def samples(metrics: PrometheusMetrics) -> dict[str, list]:
    """name -> samples, from the text serve's /metrics answers, as Prometheus' own parser reads it."""
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(metrics: PrometheusMetrics, name: str, **labels: str) -> float | None:
    for sample in samples(metrics).get(name, []):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def test_the_listener_counts_each_run_event_by_pool_provider_action_and_reason(deps: Deps) -> None:
    prom = PrometheusMetrics()
    deps.use_metrics(prom)
    emit = deps.events.emit
    for _ in range(3):
        emit(
            RunEvent(
                "submitted", str(uuid.uuid4()), pool="a", provider="ecs", payload={"dispatch_latency_seconds": 0.4}
            )
        )
    emit(
        RunEvent("submitted", str(uuid.uuid4()), pool="b", provider="process", payload={"dispatch_latency_seconds": 7})
    )
    early = {"dispatch_latency_seconds": -2.8}  # a scheduled run's job accepted before it was due: not late
    emit(RunEvent("submitted", str(uuid.uuid4()), pool="c", provider="process", payload=early))
    emit(RunEvent("crashed", "r", pool="a", provider="ecs", reason="max-run-time"))
    emit(RunEvent("crashed", "r2", pool="a", provider="ecs", reason="start-timeout"))
    emit(RunEvent("refused", "r3", pool="a", provider="ecs", reason="paused"))
    emit(
        RunEvent("retried", "r4", pool="a", provider="ecs", reason="throttled", payload={"dispatch_latency_seconds": 9})
    )
    emit(RunEvent("cancelled", "r5", pool="b", provider="process"))
    emit(RunEvent("crashed", "r6", pool="b", provider="process", reason="the job said: exit 3 at 12:00"))  # free text

    runs = "pushpool_runs_total"
    assert value(prom, runs, pool="a", provider="ecs", action="submitted", reason="") == 3
    assert value(prom, runs, pool="b", provider="process", action="submitted") == 1
    assert value(prom, runs, pool="a", action="crashed", reason="max-run-time") == 1
    assert value(prom, runs, pool="a", action="crashed", reason="start-timeout") == 1
    assert value(prom, runs, pool="a", action="refused", reason="paused") == 1
    assert value(prom, runs, pool="a", action="retried", reason="throttled") == 1
    assert value(prom, runs, pool="b", action="cancelled") == 1
    assert value(prom, runs, pool="b", action="crashed", reason="other") == 1  # never a series per message
    # Dispatch latency: from the submitted events' payload only (a retried event's is not a dispatch).
    latency = "pushpool_dispatch_latency_seconds"
    assert value(prom, f"{latency}_count", pool="a", provider="ecs") == 3
    assert value(prom, f"{latency}_sum", pool="a", provider="ecs") == pytest.approx(1.2)
    assert value(prom, f"{latency}_bucket", pool="a", le="0.5") == 3
    assert value(prom, f"{latency}_bucket", pool="b", le="5.0") == 0
    assert value(prom, f"{latency}_bucket", pool="b", le="10.0") == 1
    assert value(prom, f"{latency}_bucket", pool="c", le="0.05") == 1
    assert value(prom, f"{latency}_sum", pool="c") == 0


def test_a_recorder_set_after_the_deps_were_built_counts_and_none_counts_nothing(deps: Deps) -> None:
    deps.events.emit(RunEvent("submitted", "r1", pool="a", provider="ecs"))  # no recorder: nothing, no error
    prom = PrometheusMetrics()
    deps.use_metrics(prom)
    deps.events.emit(RunEvent("submitted", "r2", pool="a", provider="ecs"))
    assert value(prom, "pushpool_runs_total", pool="a", action="submitted") == 1


def _client(statuses: list[int | None]) -> PrefectClient:
    answers = iter(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status is None:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status, json={"id": str(uuid.uuid4()), "name": "p", "type": "process:push"})

    return PrefectClient(
        "http://127.0.0.1:1/api", transport=httpx.MockTransport(handler), clock=FixedClock(), max_retries=3
    )


def test_prefect_api_calls_are_counted_by_route_template_so_ids_make_no_new_series() -> None:
    prom = PrometheusMetrics()
    client = _client([200] * 40 + [503, None, 200] + [404])
    client.observer = m.PrefectCallCounter(lambda: prom)
    for _ in range(20):
        client.set_infrastructure_pid(str(uuid.uuid4()), "pid")  # a new run id each time
        client.read_work_pool(f"pool-{uuid.uuid4().hex[:8]}")  # a new pool name each time
    client.read_work_pool("flaky")  # 503, a connection refused, then 200: three attempts
    with pytest.raises(ObjectNotFoundError):
        client.read_work_pool("gone")  # 404

    calls = samples(prom)["pushpool_prefect_api_calls_total"]
    routes = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value for s in calls}
    assert routes == {
        ("PATCH", "/flow_runs/{id}", "200"): 20,
        ("GET", "/work_pools/{id}", "200"): 21,
        ("GET", "/work_pools/{id}", "503"): 1,
        ("GET", "/work_pools/{id}", "transport-error"): 1,
        ("GET", "/work_pools/{id}", "404"): 1,
    }
    errors = {
        (s.labels["route"], s.labels["status"]): s.value for s in samples(prom)["pushpool_prefect_api_errors_total"]
    }
    assert errors == {
        ("/work_pools/{id}", "503"): 1,
        ("/work_pools/{id}", "transport-error"): 1,
        ("/work_pools/{id}", "404"): 1,
    }


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/flow_runs/0b6c6a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b/set_state", "/flow_runs/{id}/set_state"),
        ("/flow_runs/filter", "/flow_runs/filter"),
        ("/work_pools/my pool/queues/default", "/work_pools/{id}/queues/{id}"),
        ("/variables/name/pushpool-usage", "/variables/name/{id}"),
        (
            "/block_types/slug/aws-credentials/block_documents/name/mine",
            "/block_types/slug/{id}/block_documents/name/{id}",
        ),
        ("/events/filter/next?page-token=abc", "/events/filter/next"),
        ("/flow_run_states/", "/flow_run_states"),
    ],
)
def test_route_templates(path: str, route: str) -> None:
    assert route_template(path) == route


def test_the_backend_deps_builds_counts_its_calls_and_errors(settings, fake: FakePrefect, clock: FixedClock) -> None:
    class Failing(LatencyBackend):
        def status(self, handles):  # type: ignore[no-untyped-def]
            raise BackendUnavailableError("throttled", backend="process")

    deps = Deps(settings=settings, orchestrator=fake, clock=clock)  # type: ignore[arg-type]
    deps._backends["process"] = Failing(clock=clock)  # as the provider made it
    prom = PrometheusMetrics()
    deps.use_metrics(prom)  # wraps the backends made so far, and those made later
    backend = deps.backend("process")
    assert backend.cancel(_handle(), grace_seconds=0) is None
    assert backend.cancel(_handle(), grace_seconds=0) is None
    with pytest.raises(BackendUnavailableError):
        backend.status([_handle()])
    assert backend.start_timeout_seconds == LatencyBackend.start_timeout_seconds  # everything else is the backend's
    backend.dispatch_lead_seconds = 4.0  # and set on it
    assert backend.unmetered.dispatch_lead_seconds == 4.0
    assert isinstance(backend, SweepsUnstartedJobs) is isinstance(backend.unmetered, SweepsUnstartedJobs)

    assert value(prom, "pushpool_backend_calls_total", provider="process", operation="cancel") == 2
    assert value(prom, "pushpool_backend_calls_total", provider="process", operation="status") == 1
    assert value(prom, "pushpool_backend_errors_total", operation="status", error="BackendUnavailableError") == 1
    assert value(prom, "pushpool_backend_errors_total", operation="cancel") is None


def _handle():  # type: ignore[no-untyped-def]
    from pushpool.providers.base import JobHandle

    return JobHandle("process", "job-1")


def test_a_tick_is_measured_with_its_in_flight_runs_per_pool(
    deps: Deps, fake: FakePrefect, pool: WorkPool, clock
) -> None:
    prom = PrometheusMetrics()
    deps.use_metrics(prom)
    other = fake.add_pool("idle", "process:push", base_job_template=pool.base_job_template)
    deployment = fake.add_deployment(pool.name)
    for _ in range(2):
        fake.add_run(deployment, scheduled_at=clock.now())
    timed_tick(deps, pools=[pool, other])  # dispatches both: Pending when the tick reconciles
    timed_tick(deps, pools=[pool, other])

    assert value(prom, "pushpool_monitor_tick_duration_seconds_count") == 2
    assert value(prom, "pushpool_monitor_tick_duration_seconds_bucket", le="+Inf") == 2
    assert value(prom, "pushpool_runs_in_flight", pool=pool.name) == 2
    assert value(prom, "pushpool_runs_in_flight", pool="idle") == 0
    assert value(prom, "pushpool_monitor_tick_errors_total") in (None, 0)
    timed_tick(deps, pools=[other])  # a pool no longer served is no longer shown
    assert value(prom, "pushpool_runs_in_flight", pool=pool.name) is None


def test_a_tick_that_raises_is_measured_as_an_error(deps: Deps, monkeypatch: pytest.MonkeyPatch) -> None:
    prom = PrometheusMetrics()
    deps.use_metrics(prom)

    def broken(*_, **__):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr("pushpool.entrypoints.http.tick", broken)
    with pytest.raises(RuntimeError):
        timed_tick(deps)
    assert value(prom, "pushpool_monitor_tick_duration_seconds_count") == 1
    assert value(prom, "pushpool_monitor_tick_errors_total") == 1


def _recorded(recorder: m.Metrics) -> None:
    listener = m.RunEventMetrics(lambda: recorder)
    listener(RunEvent("submitted", "r1", pool="a", provider="ecs", payload={"dispatch_latency_seconds": 0.5}))
    listener(RunEvent("submitted", "r2", pool="a", provider="ecs", payload={"dispatch_latency_seconds": 1.5}))
    listener(RunEvent("crashed", "r1", pool="a", provider="ecs", reason="max-run-time"))
    m.record_tick(recorder, 0.25, {"a": 3}, 0)


def test_the_lambda_functions_print_the_same_names_as_emf(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "pushpool-test")
    emf = EmfMetrics()
    _recorded(emf)
    capsys.readouterr()
    emf.flush()
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_metric = {}
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "pushpool-test"
        (metric,) = directive["Metrics"]
        by_metric.setdefault(metric["Name"], []).append((doc, metric["Unit"], directive["Dimensions"][0]))
    (runs,) = [d for d in by_metric["pushpool_runs_total"] if d[0]["action"] == "submitted"]
    assert runs[0]["pushpool_runs_total"] in (2, 2.0, [2.0]) and runs[1] == "Count"
    assert set(runs[2]) == {"pool", "provider", "action", "reason"} and runs[0]["reason"] == "none"
    (crashed,) = [d for d in by_metric["pushpool_runs_total"] if d[0]["action"] == "crashed"]
    assert crashed[0]["reason"] == "max-run-time" and crashed[0]["pool"] == "a"
    ((latency, unit, _),) = by_metric["pushpool_dispatch_latency_seconds"]
    assert latency["pushpool_dispatch_latency_seconds"] == [0.5, 1.5] and unit == "Seconds"  # each observation
    ((tick, _, _),) = by_metric["pushpool_monitor_tick_duration_seconds"]
    assert tick["pushpool_monitor_tick_duration_seconds"] in (0.25, [0.25])
    ((flight, _, _),) = by_metric["pushpool_runs_in_flight"]
    assert flight["pool"] == "a" and flight["pushpool_runs_in_flight"] in (3, 3.0, [3.0])
    emf.flush()  # printed once: the next invocation starts from nothing
    assert "_aws" not in capsys.readouterr().out


def test_google_and_azure_log_one_json_line_per_series(caplog: pytest.LogCaptureFixture) -> None:
    recorder = LogMetrics(logging.getLogger("pushpool.metrics"), custom_dimensions=True)
    _recorded(recorder)
    with caplog.at_level(logging.INFO, logger="pushpool.metrics"):
        recorder.flush()
    lines = [(r.metric, r.kind, r.value, r.labels, r.custom_dimensions) for r in caplog.records]
    assert ("pushpool_runs_total", "counter", 2.0) in [line[:3] for line in lines]
    latency = [line for line in lines if line[0] == "pushpool_dispatch_latency_seconds"]
    assert [line[2] for line in latency] == [0.5, 1.5]  # one line per observation: a log-based distribution reads it
    assert latency[0][3] == {"pool": "a", "provider": "ecs"}
    assert latency[0][4] == {
        "metric": "pushpool_dispatch_latency_seconds",
        "kind": "histogram",
        "value": 0.5,
        "pool": "a",
        "provider": "ecs",
    }


def test_a_function_handlers_metrics_are_flushed_however_it_ends() -> None:
    from pushpool.usecases.metrics import flushing

    flushed: list[str] = []
    handler = flushing(lambda: flushed.append("flushed"))

    @handler
    def answers() -> str:
        return "answer"

    @handler
    def fails() -> None:
        raise RuntimeError("boom")

    assert answers() == "answer" and flushed == ["flushed"]
    with pytest.raises(RuntimeError):
        fails()
    assert flushed == ["flushed", "flushed"]
