"""monitor on AWS Lambda: a ScheduleV2 tick runs the whole monitor; an EventBridge ``ECS Task State Change``
reconciles just that task's run at once (the fast path for crashes and ends).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from pushpool.entrypoints import aws_lambda
from pushpool.entrypoints.http import handle_job_event, timed_tick
from pushpool.errors import PushpoolError
from pushpool.providers.ecs.backend import run_id_of

logger = Logger()
tracer = Tracer()
aws_lambda.configure_logging(logger)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        return _handle(event)
    finally:
        aws_lambda.flush_events()  # the run events this invocation made, into Prefect
        aws_lambda.flush_metrics()  # the tick's duration and in-flight runs, run events, API and backend calls (EMF)


def _handle(event: dict[str, Any]) -> dict[str, Any]:
    deps, _ = aws_lambda.lambda_deps()
    if isinstance(event, dict) and event.get("detail-type") == aws_lambda.ECS_TASK_STATE_CHANGE:
        try:
            change = parse(event=event, model=aws_lambda.ecs_task_state_change_model())
        except ValidationError as exc:
            logger.warning("malformed ECS Task State Change ignored", extra={"errors": exc.error_count()})
            return {"ignored": "malformed event"}
        run_id = run_id_of(change.detail.started_by or "")
        if not run_id:
            return {"ignored": "task not started by pushpool"}
        try:
            result = handle_job_event(deps, run_id)
        except PushpoolError as exc:
            logger.info("task event not acted on", extra={"run": run_id, "reason": exc.one_line()})
            return {"ignored": exc.one_line()}
        return result
    report = timed_tick(deps)
    logger.info("monitor tick", extra=report.as_dict())
    return report.as_dict()
