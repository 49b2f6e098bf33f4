"""provision on AWS Lambda, invoked with IAM credentials: create or update a push pool, its Webhook block and
automation — and, with ``"provision_infra": true``, the cloud resources it needs (``"plan_only": true`` returns the
plan and changes nothing). The event is the request: {"name", "type", "provision_infra"?, "plan_only"?,
"credentials"?, "region"?, "concurrency_limit"?, "dry_run"?}. The answer is JSON.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from pushpool import aws_lambda
from pushpool.api import ProvisionRequest, parse_body
from pushpool.errors import PushpoolError
from pushpool.infra import provision_infra
from pushpool.provision import provision_pool
from pushpool.provisioners import provisioner_for

logger = Logger()
tracer = Tracer()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        deps, _ = aws_lambda.lambda_deps()
        req = parse_body(ProvisionRequest, json.dumps(event).encode())
        if req.provision_infra:
            provisioner = provisioner_for(req.type, region=req.region, credentials=req.credentials)
            infra = provision_infra(
                deps, provisioner, pool=req.name, type_name=req.type, submit_url=req.submit_url, plan_only=req.plan_only
            )
            logger.info("provisioned infrastructure", extra={"pool": req.name, "applied": infra.applied})
            return {"ok": True, **infra.as_dict()}
        result = provision_pool(
            deps,
            name=req.name,
            type_name=req.type,
            submit_url=req.submit_url,
            concurrency_limit=req.concurrency_limit,
            dry_run=req.dry_run,
        )
        logger.info("provisioned", extra=result.as_dict())
        return {"ok": True, **result.as_dict()}
    except PushpoolError as exc:
        logger.warning("provision refused", extra={"error": exc.one_line()})
        return {"ok": False, "status": exc.http_status, "error": exc.one_line()}
