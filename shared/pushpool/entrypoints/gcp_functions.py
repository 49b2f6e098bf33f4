"""What pushpool's functions on Google's function runtime (Cloud Run functions, ``functions/gcp/main.py``) share:
dependencies built once per instance, and structured JSON logs that Cloud Logging reads (``severity``, ``message``
and the fields given, one object per line on stdout).

Scheduled runs are dispatched on time by a Cloud Tasks task each (``gcp_delay.CloudTasksTrigger``, when
``PUSHPOOL_TASKS_QUEUE`` is set), delivered to the ``delayed`` function.

Metrics: the series of serve's ``/metrics`` as JSON log lines (``{"metric", "kind", "value", "labels"}``), which a
Cloud Logging log-based metric turns into Cloud Monitoring series (docs/metrics.md): :func:`flush_metrics` at the end
of each invocation.

Secrets come from Secret Manager through the platform itself (``secret_environment_variables``: ``PREFECT_API_KEY``,
``PUSHPOOL_WEBHOOK_TOKEN``), so no Google SDK is needed to read them and nothing here logs them. Cloud Run jobs are
reached with the function's own identity (Application Default Credentials).
"""

from __future__ import annotations

import json
import logging
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.function_metrics import LogMetrics
from pushpool.errors import ConfigurationError
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.run_events import install_log_fields

if TYPE_CHECKING:
    from pushpool.usecases.triggers import DelayedTrigger

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record, with Cloud Logging's ``severity`` and the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logging.googleapis.com/labels": {"logger": record.name},
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Structured logs on stdout for pushpool's loggers (once per instance)."""
    logger = logging.getLogger("pushpool")
    if any(isinstance(h.formatter, CloudLoggingFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    install_log_fields(handler)  # a line about a run carries flow_run_id, work_pool and job_id
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


@lru_cache(maxsize=1)
def function_deps() -> tuple[Deps, WebhookAuth]:
    """Dependencies for this instance (settings from the environment, Prefect client, backends), built once.

    Raises:
        ConfigurationError: the delay queue configured in part (``PUSHPOOL_TASKS_*``: all three or none).
    """
    settings = Settings.from_env()
    deps = Deps.from_settings(settings)
    deps.use_metrics(LogMetrics(logging.getLogger("pushpool.metrics")))  # JSON lines a log-based metric reads
    deps.trigger = tasks_trigger(settings)
    return deps, WebhookAuth(settings.webhook_tokens, settings.webhook_signing_secrets)


def flush_metrics() -> None:
    """Log what this invocation measured (``function_metrics.LogMetrics``: one JSON line per series, the names of
    serve's ``/metrics``); nothing when the dependencies were never built."""
    if function_deps.cache_info().currsize:
        metrics = function_deps()[0].metrics
        if isinstance(metrics, LogMetrics):
            metrics.flush()


def tasks_trigger(settings: Settings) -> DelayedTrigger | None:
    """Scheduled runs: a Cloud Tasks task per run, delivered to the ``delayed`` function at its time (None: the
    monitor's sweep alone)."""
    parts = {
        "PUSHPOOL_TASKS_QUEUE": settings.tasks_queue,
        "PUSHPOOL_TASKS_URL": settings.tasks_url,
        "PUSHPOOL_TASKS_SERVICE_ACCOUNT": settings.tasks_service_account,
    }
    if not any(parts.values()):
        return None
    missing = [name for name, value in parts.items() if not value]
    if missing:
        raise ConfigurationError(f"the Cloud Tasks delay queue is configured in part: set {', '.join(missing)} too")
    from pushpool.entrypoints.gcp_delay import CloudTasksTrigger

    return CloudTasksTrigger(
        str(settings.tasks_queue),
        str(settings.tasks_url),
        str(settings.tasks_service_account),
        endpoint=settings.cloud_tasks_endpoint,
    )
