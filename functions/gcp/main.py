"""pushpool's three functions on Google's function runtime (functions-framework), thin like the Lambda handlers:

* ``submit`` (HTTP): Prefect's call-webhook automation (bearer token) or any signed client posts a flow-run event; the
  run becomes a Cloud Run job.
* ``provision`` (HTTP, for callers with the invoker role): create or update a push pool, its Webhook block and
  automation; the body is the request ``{"name", "type", …}``.
* ``delayed`` (HTTP, IAM-only: invoked by Cloud Tasks with the tasks' service account's OIDC token): a scheduled run's
  trigger firing at its time (``pushpool.usecases.punctual``); submit acts only if the run is still Scheduled and due.
* ``monitor`` (CloudEvent): Cloud Scheduler publishes to a Pub/Sub topic; each message is one monitor tick.

``functions-framework --source functions/gcp/main.py --target submit`` serves one of them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import functions_framework
from pushpool.entrypoints.gcp_functions import configure_logging, flush_metrics, function_deps
from pushpool.entrypoints.http import (
    ProvisionRequest,
    handle_delayed_run,
    handle_submit,
    parse_body,
    run_provision,
    timed_tick,
)
from pushpool.errors import InvalidRequestError, PushpoolError
from pushpool.usecases.event_publisher import flushed
from pushpool.usecases.metrics import flushing

configure_logging()
log = logging.getLogger("pushpool.functions")
JSON = {"Content-Type": "application/json"}


metered = flushing(flush_metrics)  # the invocation's metrics, logged when it ends (docs/metrics.md)


@functions_framework.http
@flushed(function_deps)  # the run events of the invocation, into Prefect
@metered
def submit(request: Any) -> tuple[bytes, int, dict[str, str]]:
    if request.method != "POST":  # the runtime passes every method on: the same answer as pushpool serve's
        refused = {"error": f"{request.method} is not allowed on submit: use POST"}
        return json.dumps(refused).encode(), 405, {**JSON, "Allow": "POST"}
    deps, auth = function_deps()
    answer = handle_submit(deps, auth, dict(request.headers), request.get_data(), trigger="webhook")
    log.info(
        "submit answered",
        extra={"status": answer.status, "outcome": answer.body.get("outcome"), "run": answer.body.get("flow_run_id")},
    )
    return answer.json_bytes(), answer.status, JSON


@functions_framework.http
@flushed(function_deps)  # the run events of the invocation, into Prefect
@metered
def delayed(request: Any) -> tuple[bytes, int, dict[str, str]]:
    """One Cloud Tasks task: 2xx ends it; any other answer makes Cloud Tasks retry it (the queue's retry config), so
    a malformed or stale task is answered 200 and dropped, and only a transient failure answers 5xx."""

    deps, _ = function_deps()
    try:
        answer = handle_delayed_run(deps, request.get_data())
    except InvalidRequestError as exc:
        log.warning("delayed trigger dropped", extra={"error": exc.one_line()})
        return json.dumps({"outcome": "dropped", "error": exc.one_line()}).encode(), 200, JSON
    except PushpoolError as exc:
        log.warning("delayed trigger failed; Cloud Tasks will retry it", extra={"error": exc.one_line()})
        return json.dumps({"error": exc.one_line()}).encode(), max(500, exc.http_status), JSON
    log.info("delayed trigger", extra={"outcome": answer.get("outcome"), "run": answer.get("flow_run_id")})
    return json.dumps(answer, default=str).encode(), 200, JSON


@functions_framework.http
@flushed(function_deps)  # the run events of the invocation, into Prefect
@metered
def provision(request: Any) -> tuple[bytes, int, dict[str, str]]:

    deps, _ = function_deps()
    try:
        result = run_provision(deps, parse_body(ProvisionRequest, request.get_data()))
    except PushpoolError as exc:
        log.warning("provision refused", extra={"error": exc.one_line()})
        return json.dumps({"ok": False, "error": exc.one_line()}).encode(), exc.http_status, JSON
    log.info("provisioned", extra={"pool": result.get("pool"), "changed": result.get("changed")})
    return json.dumps({"ok": True, **result}, default=str).encode(), 200, JSON


@functions_framework.cloud_event
@flushed(function_deps)  # the run events of the invocation, into Prefect
@metered
def monitor(cloud_event: Any) -> None:
    deps, _ = function_deps()
    report = timed_tick(deps)
    log.info("monitor tick", extra={"event": cloud_event["id"], **report.as_dict()})
