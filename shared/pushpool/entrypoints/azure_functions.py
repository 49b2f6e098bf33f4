"""What pushpool's Azure Functions (functions/azure/function_app.py) share: their dependencies, built once per warm
worker, and log lines Application Insights can query.

Secrets: the Prefect key and the webhook token arrive as app settings whose values are Key Vault references
(``@Microsoft.KeyVault(SecretUri=...)``), resolved by the Functions host with the app's managed identity before the
worker starts — so they are plain environment variables here (``PREFECT_API_KEY``, ``PUSHPOOL_WEBHOOK_TOKEN``) and
pushpool needs no Key Vault SDK. The container groups are created with the app's managed identity
(``DefaultAzureCredential``), whose role is scoped to the pool's resource group (infra/azure, the provisioner).
Scheduled runs are dispatched on time through the delay queue (``PUSHPOOL_DELAY_QUEUE_URL``, an Azure Storage queue:
``azure_delay.StorageQueueTrigger``).
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from pushpool.entrypoints.auth import WebhookAuth
from pushpool.entrypoints.function_metrics import LogMetrics
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps
from pushpool.usecases.run_events import install_log_fields

log = logging.getLogger("pushpool.azure")


@lru_cache(maxsize=1)
def azure_deps() -> tuple[Deps, WebhookAuth]:
    """Dependencies for this warm worker (settings, Prefect client, the ACI backend), built once."""
    settings = Settings.from_env()
    deps = Deps.from_settings(settings)
    # The metrics as log lines with customDimensions (Application Insights' traces; docs/metrics.md has the KQL).
    deps.use_metrics(LogMetrics(logging.getLogger("pushpool.metrics"), custom_dimensions=True))
    install_log_fields(*logging.getLogger().handlers)  # the worker's: a line about a run carries its run, pool, job
    if settings.delay_queue_url:  # scheduled runs: a message per run, invisible until its time, then `delayed`
        from pushpool.entrypoints.azure_delay import StorageQueueTrigger

        deps.trigger = StorageQueueTrigger(settings.delay_queue_url)
    return deps, WebhookAuth(settings.webhook_tokens, settings.webhook_signing_secrets)


def flush_metrics() -> None:
    """Log what this invocation measured (one line per series, the names of serve's ``/metrics``); nothing when the
    dependencies were never built."""
    if azure_deps.cache_info().currsize:
        metrics = azure_deps()[0].metrics
        if isinstance(metrics, LogMetrics):
            metrics.flush()


def log_event(message: str, **fields: Any) -> None:
    """One log line: the message, then its fields as JSON. The Python worker sends it to Application Insights as a
    trace; the fields are also ``customDimensions`` there (``extra``)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    log.info("%s %s", message, json.dumps(fields, default=str, sort_keys=True), extra={"custom_dimensions": fields})
