"""submit: an HTTP-triggered function (Prefect's call-webhook automation, or any signed client).

Thin by design: parse the HTTP event, call one use-case, shape the response. No SDK imports here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pushpool.api import handle_submit, http_event_parts, to_http_response
from pushpool.auth import WebhookAuth
from pushpool.deps import Deps
from pushpool.settings import Settings


@lru_cache(maxsize=1)
def _deps() -> tuple[Deps, WebhookAuth]:
    settings = Settings.from_env()
    return Deps.from_settings(settings), WebhookAuth(settings.webhook_tokens, settings.webhook_signing_secrets)


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    deps, auth = _deps()
    headers, body = http_event_parts(event)
    return to_http_response(handle_submit(deps, auth, headers, body, trigger="webhook"))
