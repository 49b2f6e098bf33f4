"""Webhook authentication: token mode (what Prefect's Webhook block sends) and signature mode; serve's admin token."""

from __future__ import annotations

import pytest
from pushpool.entrypoints.auth import AdminAuth, WebhookAuth, sign
from pushpool.errors import ConfigurationError, ForbiddenError, UnauthorizedError

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


# -- the admin token (serve's /provision and /monitor) ----------------------------------------------------------------


def admin() -> AdminAuth:
    return AdminAuth(["adm-secret"], webhook=auth())


def test_the_admin_token_is_accepted() -> None:
    admin().verify({"authorization": "Bearer adm-secret"})


@pytest.mark.parametrize("token", ["current-token", "previous-token"])
def test_the_webhook_token_is_forbidden_with_what_to_send_instead(token: str) -> None:
    with pytest.raises(ForbiddenError) as err:
        admin().verify({"Authorization": f"Bearer {token}"})
    assert err.value.http_status == 403
    assert "webhook token authorizes submit only" in err.value.message
    assert "<PUSHPOOL_HOME>/admin-token" in err.value.message and token not in err.value.message


def test_a_webhook_signature_is_forbidden() -> None:
    with pytest.raises(ForbiddenError, match="signature authorizes submit only"):
        admin().verify(signed("plain-secret-two"))


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic YWRtLXNlY3JldA=="}, {"X": "adm-secret"}]
)
def test_missing_or_wrong_admin_tokens_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(UnauthorizedError) as err:
        admin().verify(headers)
    assert err.value.http_status == 401 and "adm-secret" not in err.value.message


def test_no_admin_token_refuses_everyone_even_the_webhook_token() -> None:
    with pytest.raises(ForbiddenError, match="no admin token is configured"):
        AdminAuth([], webhook=auth()).verify({"Authorization": "Bearer current-token"})


def test_an_admin_token_equal_to_the_webhook_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="must differ from the webhook token"):
        AdminAuth(["previous-token"], webhook=auth())
