"""Webhook authentication for submit, shared by every deployment target; and the admin token of ``pushpool serve``'s
``/provision`` and ``/monitor`` (:class:`AdminAuth`).

Prefect's ``call-webhook`` action can only send the static headers stored in its Webhook block, so two modes:

* **token** (what Prefect sends): ``Authorization: Bearer <token>``; provision stores the token in the Webhook
  block's secret headers. Two tokens are accepted during rotation.
* **signature** (any other client, Standard Webhooks style): headers ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (several space-separated signatures allowed).
  Timestamps outside the tolerance window are refused, and an id already seen within the window is a replay
  (remembered in this process; a stateless function refuses replays per warm instance).

Comparisons are constant-time. Nothing about the secrets appears in errors.

The webhook token authorizes submit only. Prefect keeps it in the pool's Webhook block, which every user of the
Prefect API can read, so it cannot also authorize provisioning (creating pools, automations and cloud resources) or a
monitor tick: serve asks for an admin token there (``<PUSHPOOL_HOME>/admin-token``, or ``PUSHPOOL_ADMIN_TOKEN``), which
pushpool never writes to Prefect. The cloud functions' provision is authorized by the platform instead (IAM on AWS and
Google, the admin-level function key on Azure).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from cachetools import TTLCache
from standardwebhooks import Webhook

from pushpool.errors import ConfigurationError, ForbiddenError, UnauthorizedError

TOLERANCE_SECONDS = 300


def _secret_bytes(secret: str) -> bytes:
    """A ``whsec_<base64>`` secret (the Standard Webhooks form) decoded, any other secret taken as it is."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :])
        except (ValueError, binascii.Error):
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for a body, by the Standard Webhooks scheme (used by clients and tests)."""
    when = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return Webhook(_secret_bytes(secret)).sign(msg_id, when, body.decode("utf-8"))


class ReplayCache:
    """Message ids seen within twice the tolerance window, at most ``max_entries`` (oldest dropped first)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._now = 0.0
        self._seen: TTLCache[str, bool] = TTLCache(max_entries, ttl=2 * TOLERANCE_SECONDS, timer=lambda: self._now)
        self._lock = threading.Lock()

    def check_and_add(self, msg_id: str, now: float) -> bool:
        """True if ``msg_id`` is new (and remember it)."""
        with self._lock:
            self._now = now
            if msg_id in self._seen:
                return False
            self._seen[msg_id] = True
            return True


class WebhookAuth:
    def __init__(
        self,
        tokens: Sequence[str],
        signing_secrets: Sequence[str] = (),
        *,
        replay_cache: ReplayCache | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = [t.encode() for t in tokens if t]
        self.secrets = [s for s in signing_secrets if s]
        self.replays = replay_cache or ReplayCache()
        self.now = now

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.secrets)

    def verify(self, headers: Mapping[str, str], body: bytes) -> str:
        """Return the mode that authenticated the request ("token" or "signature").

        Raises:
            UnauthorizedError: missing, wrong, expired or replayed credentials.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        if not self.configured:
            raise UnauthorizedError("submit has no webhook token or signing secret configured")
        auth = lower.get("authorization", "")
        if auth:
            scheme, _, presented = auth.partition(" ")
            if scheme.lower() == "bearer" and presented and self.tokens:
                given = presented.strip().encode()
                if any(hmac.compare_digest(given, t) for t in self.tokens):
                    return "token"
            raise UnauthorizedError("invalid bearer token")
        if "webhook-signature" in lower:
            return self._verify_signature(lower, body)
        raise UnauthorizedError("missing credentials: send a bearer token or a webhook signature")

    def _verify_signature(self, headers: Mapping[str, str], body: bytes) -> str:
        if not self.secrets:
            raise UnauthorizedError("signed requests are not enabled")
        msg_id = headers.get("webhook-id", "")
        raw_ts = headers.get("webhook-timestamp", "")
        if not msg_id or not raw_ts.isdigit():
            raise UnauthorizedError("signed request without webhook-id or webhook-timestamp")
        timestamp = int(raw_ts)
        now = self.now()
        if abs(now - timestamp) > TOLERANCE_SECONDS:
            raise UnauthorizedError("webhook timestamp outside the tolerance window")
        presented = [p.strip() for p in headers.get("webhook-signature", "").split(" ") if p.strip()]
        try:
            expected = [sign(secret, msg_id, timestamp, body) for secret in self.secrets]
        except UnicodeDecodeError:
            raise UnauthorizedError("invalid webhook signature") from None
        if not any(hmac.compare_digest(p.encode(), e.encode()) for p in presented for e in expected):
            raise UnauthorizedError("invalid webhook signature")
        if not self.replays.check_and_add(msg_id, now):
            raise UnauthorizedError("replayed webhook (id already seen)")
        return "signature"


ADMIN_HINT = (
    "send the admin token (<PUSHPOOL_HOME>/admin-token on serve's machine, or PUSHPOOL_ADMIN_TOKEN) as "
    "'Authorization: Bearer <token>', or run `pushpool work-pool create` there"
)


class AdminAuth:
    """Who may call ``pushpool serve``'s ``/provision`` and ``/monitor``: a bearer admin token, never the webhook's
    token or signature (which answer 403, saying what to send), and nobody when no admin token is configured."""

    def __init__(self, tokens: Sequence[str], *, webhook: WebhookAuth | None = None) -> None:
        """``webhook``: submit's credentials, recognised only to refuse them with a clear reason.

        Raises:
            ConfigurationError: an admin token that is also a webhook token (Prefect would hold it).
        """
        self.tokens = [t.encode() for t in tokens if t]
        self.webhook_tokens = list(webhook.tokens) if webhook is not None else []
        if any(hmac.compare_digest(a, w) for a in self.tokens for w in self.webhook_tokens):
            raise ConfigurationError(
                "the admin token must differ from the webhook token: Prefect's Webhook block holds the webhook token"
            )

    @property
    def configured(self) -> bool:
        return bool(self.tokens)

    def verify(self, headers: Mapping[str, str]) -> None:
        """Pass when ``headers`` carry an admin token.

        Raises:
            UnauthorizedError: missing or wrong credentials (401).
            ForbiddenError: the webhook token or a webhook signature (403), or no admin token configured.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        if not self.tokens:
            raise ForbiddenError("provisioning over HTTP is off here: no admin token is configured")
        auth = lower.get("authorization", "")
        if auth:
            scheme, _, presented = auth.partition(" ")
            given = presented.strip().encode() if scheme.lower() == "bearer" else b""
            if given and any(hmac.compare_digest(given, t) for t in self.tokens):
                return
            if given and any(hmac.compare_digest(given, t) for t in self.webhook_tokens):
                raise ForbiddenError(f"the webhook token authorizes submit only: {ADMIN_HINT}")
            raise UnauthorizedError(f"invalid admin token: {ADMIN_HINT}")
        if "webhook-signature" in lower:
            raise ForbiddenError(f"a webhook signature authorizes submit only: {ADMIN_HINT}")
        raise UnauthorizedError(f"missing credentials: {ADMIN_HINT}")
