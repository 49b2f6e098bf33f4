"""provision on AWS Lambda, invoked with IAM credentials: create or update a push pool, its Webhook block and
automation — and, with ``"provision_infra": true``, the cloud resources it needs (``"plan_only": true`` returns the
plan and changes nothing). The event is the request: {"name", "type", "provision_infra"?, "plan_only"?,
"credentials"?, "region"?, "concurrency_limit"?, "dry_run"?}. The answer is JSON.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from pushpool.entrypoints import aws_lambda
from pushpool.entrypoints.http import ProvisionRequest, parse_body, run_provision
from pushpool.errors import PushpoolError

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        aws_lambda.check_provision_request(event)  # no IAM users or access keys from the stack's role
        deps, _ = aws_lambda.lambda_deps()
        result = run_provision(deps, parse_body(ProvisionRequest, json.dumps(event).encode()))
        logger.info("provisioned", extra={"pool": result.get("pool"), "changed": result.get("changed")})
        return {"ok": True, **result}
    except PushpoolError as exc:
        logger.warning("provision refused", extra={"error": exc.one_line()})
        return {"ok": False, "status": exc.http_status, "error": exc.one_line()}
    finally:
        aws_lambda.flush_metrics()  # its Prefect API calls (EMF)
