"""Webhook authentication: token mode (what Prefect's Webhook block sends) and signature mode."""

from __future__ import annotations

import pytest
from pushpool.entrypoints.auth import WebhookAuth, sign
from pushpool.errors import UnauthorizedError

BODY = b'{"flow_run_id": "x"}'
NOW = 1_800_000_000


def auth(**kw: object) -> WebhookAuth:
    return WebhookAuth(
        ["current-token", "previous-token"], ["whsec_c2VjcmV0LW9uZQ==", "plain-secret-two"], now=lambda: NOW, **kw
    )


def signed(secret: str, msg_id: str = "msg-1", ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body)}


@pytest.mark.parametrize("token", ["current-token", "previous-token"])
def test_both_tokens_are_accepted_during_rotation(token: str) -> None:
    assert auth().verify({"Authorization": f"Bearer {token}"}, BODY) == "token"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"authorization": "Basic Y3VycmVudC10b2tlbg=="},
        {"Authorization": "current-token"},
    ],
)
def test_missing_or_wrong_tokens_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(UnauthorizedError) as err:
        auth().verify(headers, BODY)
    assert "current-token" not in str(err.value) and "previous" not in str(err.value)


@pytest.mark.parametrize("secret", ["whsec_c2VjcmV0LW9uZQ==", "plain-secret-two"])
def test_signatures_with_either_secret_are_accepted(secret: str) -> None:
    assert auth().verify(signed(secret), BODY) == "signature"


def test_signature_over_another_body_is_refused() -> None:
    with pytest.raises(UnauthorizedError, match="invalid webhook signature"):
        auth().verify(signed("plain-secret-two", body=b"{}"), BODY)


def test_unsigned_and_expired_requests_are_refused() -> None:
    a = auth()
    with pytest.raises(UnauthorizedError):
        a.verify({"webhook-signature": "v1,abc"}, BODY)
    with pytest.raises(UnauthorizedError, match="tolerance"):
        a.verify(signed("plain-secret-two", ts=NOW - 301), BODY)
    with pytest.raises(UnauthorizedError, match="tolerance"):
        a.verify(signed("plain-secret-two", ts=NOW + 301), BODY)


def test_replayed_requests_are_refused() -> None:
    a = auth()
    headers = signed("plain-secret-two", msg_id="once")
    assert a.verify(headers, BODY) == "signature"
    with pytest.raises(UnauthorizedError, match="replayed"):
        a.verify(headers, BODY)


def test_nothing_configured_refuses_everything() -> None:
    with pytest.raises(UnauthorizedError):
        WebhookAuth([], []).verify({"Authorization": "Bearer x"}, BODY)
