"""``GET /metrics`` of ``pushpool serve``: the recorder of ``usecases/metrics.py`` on prometheus-client (the ``cli``
extra), which writes the text exposition format, escapes label values and keeps histogram buckets as Prometheus
defines them. Imported only by serve: the functions' runtimes do not install prometheus-client.

Each recorder has its own registry (two serves in one test process do not share counts); the process's own series
(``process_cpu_seconds_total``, ``python_gc_*``) are added as the default registry would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from pushpool.usecases.metrics import CATALOGUE, COUNTER, HISTOGRAM, SPECS, Metrics

log = logging.getLogger("pushpool.metrics")

# No ``*_created`` series beside each counter and histogram: a second series per label set that no panel reads.
disable_created_metrics()

# The classic text format, which every Prometheus (and every scraper that speaks it) reads; pushpool's names and labels
# are all legacy-valid, so generate_latest writes exactly that format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PrometheusMetrics(Metrics):
    enabled = True

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self._metrics: dict[str, Counter | Histogram | Gauge] = {}
        for spec in CATALOGUE:
            if spec.kind == COUNTER:  # prometheus-client adds the _total suffix itself
                metric = Counter(spec.name.removesuffix("_total"), spec.help, spec.labels, registry=self.registry)
            elif spec.kind == HISTOGRAM:
                metric = Histogram(spec.name, spec.help, spec.labels, registry=self.registry, buckets=spec.buckets)
            else:
                metric = Gauge(spec.name, spec.help, spec.labels, registry=self.registry)
            self._metrics[spec.name] = metric

    def _series(self, name: str, labels: Mapping[str, str] | None) -> Counter | Histogram | Gauge:
        metric = self._metrics[name]
        names = SPECS[name].labels
        if not names:
            return metric
        given = labels or {}
        return metric.labels(*(str(given.get(label) or "") for label in names))

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        try:
            self._series(name, labels).inc(value)  # type: ignore[union-attr]
        except Exception:
            log.exception("counting %s failed", name)

    def observe(self, name: str, labels: Mapping[str, str] | None = None, value: float = 0.0) -> None:
        try:
            self._series(name, labels).observe(value)  # type: ignore[union-attr]
        except Exception:
            log.exception("observing %s failed", name)

    def set_all(self, name: str, series: Sequence[tuple[Mapping[str, str], float]]) -> None:
        try:
            gauge = self._metrics[name]
            gauge.clear()
            for labels, value in series:
                self._series(name, labels).set(value)  # type: ignore[union-attr]
        except Exception:
            log.exception("setting %s failed", name)

    def exposition(self) -> bytes:
        """Every series, in Prometheus' text format."""
        return generate_latest(self.registry)
