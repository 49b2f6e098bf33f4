"""The functions' metrics (issue 26): the series of ``usecases/metrics.py``, under the same names as serve's
``/metrics``, printed once at the end of each invocation in the form the platform turns into metrics — with no
dependency beyond what each function already installs.

* AWS Lambda: CloudWatch embedded metric format (EMF) through Powertools' metrics (``aws-lambda-powertools``, already
  the functions' library): one JSON document per label set on stdout, which CloudWatch Logs turns into metrics in the
  namespace ``POWERTOOLS_METRICS_NAMESPACE`` with the labels as dimensions. A histogram's observations go as EMF's
  list of values (CloudWatch computes its percentiles); a counter goes as the invocation's increase (read it with the
  ``Sum`` statistic); a gauge as its value (``Maximum``/``Average``).
* Google (Cloud Run functions) and Azure Functions: one structured log line per label set (``{"metric": name, "kind",
  "value", "labels": {...}}``; a histogram's observations one line each). Cloud Logging reads the JSON of stdout
  (``gcp_functions.CloudLoggingFormatter``), so a log-based metric (a distribution on ``jsonPayload.value``, labels
  extracted from ``jsonPayload.labels.*``) makes the same series in Cloud Monitoring; on Azure the line is a trace in
  Application Insights with the fields in ``customDimensions``, which a KQL query (a workbook, an alert, Grafana's
  Azure Monitor data source) sums. No OpenTelemetry: neither runtime ships an exporter for it in the functions'
  requirements, and it would add an SDK and an exporter to every cold start for what a log line already carries.

The recorders accumulate in memory (``usecases/metrics.Accumulator``) and print at :meth:`flush`; a failure to print
is logged and never fails the invocation.
"""

from __future__ import annotations

import logging
from typing import Any

from pushpool.usecases.metrics import HISTOGRAM, Accumulator

log = logging.getLogger("pushpool.metrics")

EMF_MAX_VALUES = 100  # CloudWatch takes at most 100 values of one metric in one EMF document


class EmfMetrics(Accumulator):
    """AWS Lambda: the metrics as CloudWatch EMF through Powertools (``namespace``: ``POWERTOOLS_METRICS_NAMESPACE``
    when None)."""

    def __init__(self, namespace: str | None = None) -> None:
        super().__init__()
        self.namespace = namespace

    def flush(self) -> None:
        try:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

            for spec, labels, values in self.take():
                unit = MetricUnit.Seconds if spec.unit == "seconds" else MetricUnit.Count
                for start in range(0, len(values), EMF_MAX_VALUES):
                    emf = EphemeralMetrics(namespace=self.namespace)
                    for name, value in labels.items():  # an empty dimension is dropped by CloudWatch: say "none"
                        emf.add_dimension(name=name, value=value or "none")
                    for value in values[start : start + EMF_MAX_VALUES]:
                        emf.add_metric(name=spec.name, unit=unit, value=value)
                    emf.flush_metrics()
        except Exception:
            log.exception("printing the metrics (EMF) failed")


class LogMetrics(Accumulator):
    """Google and Azure: the metrics as structured log lines on ``logger`` (one per label set; a histogram's
    observations one per value). ``custom_dimensions``: also pass the fields as Azure's worker reads them."""

    def __init__(self, logger: logging.Logger | None = None, *, custom_dimensions: bool = False) -> None:
        super().__init__()
        self.logger = logger or log
        self.custom_dimensions = custom_dimensions

    def flush(self) -> None:
        try:
            for spec, labels, values in self.take():
                for value in values if spec.kind == HISTOGRAM else values[-1:]:
                    fields: dict[str, Any] = {
                        "metric": spec.name,
                        "kind": spec.kind,
                        "value": value,
                        "labels": labels,
                    }
                    if self.custom_dimensions:  # Application Insights' customDimensions (azure_functions.log_event)
                        fields["custom_dimensions"] = _flat(fields)
                    self.logger.info("metric %s %s", spec.name, value, extra=fields)
        except Exception:
            log.exception("printing the metrics (log lines) failed")


def _flat(fields: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in fields.items() if k != "labels"}, **fields["labels"]}
