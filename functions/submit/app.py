"""submit on AWS Lambda, behind a Function URL: Prefect's call-webhook automation (bearer token) or any signed
client posts a flow-run event; the run becomes an ECS task. Also invoked by the delay queue (SQS records): a
scheduled run's trigger firing at its time (``pushpool.usecases.punctual``): a batch's records are handled at once
(Powertools' BatchProcessor handles them one after another), and only failed records are retried.

Thin: Powertools resolves the HTTP event, pushpool.entrypoints.http does the work, the answer is shaped back. No
Powertools Tracer here: it imports the X-Ray SDK at start-up (~100 ms of every cold start, measured by
``make bench``) for subsegments of the few boto3 calls; the function's active tracing still records each invocation.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from pushpool.entrypoints import aws_lambda
from pushpool.entrypoints.http import handle_delayed_run, handle_submit
from pushpool.errors import InvalidRequestError

logger = Logger()
app = LambdaFunctionUrlResolver()
aws_lambda.configure_logging(logger)


@app.post("/")
@app.post("/submit")
def submit() -> Response:
    deps, auth = aws_lambda.lambda_deps()
    event = app.current_event
    body = event.decoded_body.encode() if isinstance(event.decoded_body, str) else (event.decoded_body or b"")
    answer = handle_submit(deps, auth, dict(event.headers or {}), body, trigger="webhook")
    outcome = answer.body.get("outcome")
    logger.info(
        "submit answered",
        extra={
            "status": answer.status,
            "outcome": outcome,
            "run": answer.body.get("flow_run_id"),
            "error": answer.body.get("error"),
        },
    )
    return Response(status_code=answer.status, content_type="application/json", body=answer.json_bytes().decode())


def delayed_run(record: dict[str, Any]) -> bool:
    """One delayed trigger: submit the run if it is due. False: retry the message (a transient failure); a malformed
    or stale message is dropped, not retried."""
    deps, _ = aws_lambda.lambda_deps()
    try:
        answer = handle_delayed_run(deps, str(record.get("body") or "").encode())
    except InvalidRequestError as exc:
        logger.warning("delayed trigger dropped", extra={"error": exc.one_line()})
        return True
    except Exception:
        logger.exception("delayed trigger failed; SQS will deliver it again")
        return False
    logger.info(
        "delayed trigger",
        extra={"outcome": answer.get("outcome"), "run": answer.get("flow_run_id"), "pool": answer.get("work_pool")},
    )
    return True


def delayed_runs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of delayed triggers, all at once (runs due in the same second should not queue behind each other),
    answered as an SQS partial batch response: only the failed records come back."""
    with ThreadPoolExecutor(max_workers=max(1, min(10, len(records)))) as executor:
        handled = list(executor.map(delayed_run, records))
    failed = [record for record, ok in zip(records, handled, strict=True) if not ok]
    return {"batchItemFailures": [{"itemIdentifier": record["messageId"]} for record in failed]}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        if event.get("Records"):  # the delay queue
            return delayed_runs(event["Records"])
        return app.resolve(event, context)
    finally:
        aws_lambda.flush_events()  # the run events this invocation made, into Prefect
        aws_lambda.flush_metrics()  # runs submitted, crashed, refused …, dispatch latency, API and backend calls (EMF)
