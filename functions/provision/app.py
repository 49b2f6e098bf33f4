"""provision: an operator-invoked function (IAM-authenticated invoke) that creates or updates a push pool."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from pushpool.api import ProvisionRequest, _parse
from pushpool.deps import Deps
from pushpool.errors import PushpoolError
from pushpool.provision import provision_pool
from pushpool.settings import Settings


@lru_cache(maxsize=1)
def _deps() -> Deps:
    return Deps.from_settings(Settings.from_env())


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    try:
        req = _parse(ProvisionRequest, json.dumps(event).encode())
        result = provision_pool(
            _deps(),
            name=req.name,
            type_name=req.type,
            submit_url=req.submit_url,
            concurrency_limit=req.concurrency_limit,
            dry_run=req.dry_run,
        )
        return {"ok": True, **result.as_dict()}
    except PushpoolError as exc:
        return {"ok": False, "status": exc.http_status, "error": exc.one_line()}
