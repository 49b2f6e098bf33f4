"""The Google boundary of the Cloud Run provider: google-api-core and google-auth exceptions leave as pushpool errors,
by status code and exception type (never by message text); and the retry policy for 429/5xx (google-api-core's).

A 429 is RESOURCE_EXHAUSTED, which Google answers both for a rate limit and for a quota: the ``ErrorInfo`` reason tells
them apart (``google/api/error_reason.proto``: ``RATE_LIMIT_EXCEEDED`` or ``RESOURCE_QUOTA_EXCEEDED``, e.g. Cloud
Run's jobs per region), so a quota leaves as QuotaExceededError and a rate limit as BackendUnavailableError."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

from pushpool.errors import (
    BackendError,
    BackendUnavailableError,
    PushpoolError,
    QuotaExceededError,
    retry_after_seconds,
    translating,
)

NAME = "cloudrun"
RETRIED_CODES = frozenset({429, 500, 502, 503, 504})
QUOTA_REASONS = frozenset({"RESOURCE_QUOTA_EXCEEDED"})  # ErrorInfo reasons of a quota (not a rate) refusal
_REQUEST = re.compile(r"^[A-Z]+ https?://\S+: ")


def google_errors(context: str = "") -> contextlib.AbstractContextManager[None]:
    """Google's exceptions leave as pushpool errors; ``context`` prefixes the message (what was being done)."""
    return translating(lambda exc: translate_google_error(exc, context))


def status_code(exc: BaseException | None) -> int | None:
    """The HTTP status of a google-api-core error (its ``code``), looking through a RetryError to its cause."""
    from google.api_core import exceptions

    if isinstance(exc, exceptions.RetryError):
        exc = exc.cause
    code = getattr(exc, "code", None) if isinstance(exc, exceptions.GoogleAPICallError) else None
    return int(code) if isinstance(code, int) else None


def translate_google_error(exc: Exception, context: str = "") -> BackendError | None:
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    prefix = f"{context}: " if context else ""
    if isinstance(exc, exceptions.RetryError):
        cause = exc.cause
        why = _message(cause) if isinstance(cause, exceptions.GoogleAPICallError) else str(cause or exc)
        if _quota(cause):
            return QuotaExceededError(
                f"{prefix}Google quota exceeded: {why}", backend=NAME, retry_after=_retry_after(cause)
            )
        return BackendUnavailableError(
            f"{prefix}Cloud Run still failing after retries: {why}", backend=NAME, retry_after=_retry_after(cause)
        )
    if isinstance(exc, exceptions.GoogleAPICallError):
        code = status_code(exc) or 0
        if _quota(exc):
            return QuotaExceededError(
                f"{prefix}Google quota exceeded: {_message(exc)}", backend=NAME, retry_after=_retry_after(exc)
            )
        if code in RETRIED_CODES:  # 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, 500, 502
            return BackendUnavailableError(
                f"{prefix}Google is unavailable: {_message(exc)}", backend=NAME, retry_after=_retry_after(exc)
            )
        return BackendError(f"{prefix}{_message(exc)}", backend=NAME)
    if isinstance(exc, requests.ConnectionError | requests.Timeout):  # the REST transport's own: not api-core's
        return BackendUnavailableError(f"{prefix}cannot reach Google: {type(exc).__name__}", backend=NAME)
    if isinstance(exc, auth_exceptions.DefaultCredentialsError):
        return BackendError(
            f"{prefix}no Google credentials: run with a service account (Application Default Credentials) or name a "
            "gcp-credentials block in the pool's `credentials`",
            backend=NAME,
        )
    if isinstance(exc, auth_exceptions.TransportError):
        return BackendUnavailableError(f"{prefix}cannot reach Google: {exc}", backend=NAME)
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return BackendError(f"{prefix}Google refused pushpool's credentials: {exc}", backend=NAME)
    return None


def _retry_after(exc: Any) -> float | None:
    """The ``Retry-After`` of the HTTP answer behind a google-api-core error (REST transport), if it had one."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return retry_after_seconds(headers.get("Retry-After")) if headers is not None else None


def _quota(exc: BaseException | None) -> bool:
    """Whether Google refused for a quota (429 RESOURCE_EXHAUSTED whose ErrorInfo reason names a quota)."""
    return status_code(exc) == 429 and getattr(exc, "reason", None) in QUOTA_REASONS


def _message(exc: Any) -> str:
    """Google's own words: ``<HTTP status>: <message>``, without the request's method and URL."""
    return f"{exc.code}: {_REQUEST.sub('', str(exc.message))}"


def retry_policy(*, initial: float, timeout: float) -> Any:
    """google-api-core's retry on 429 and 5xx: exponential backoff with jitter, for at most ``timeout`` seconds."""
    from google.api_core import exceptions
    from google.api_core import retry as retries

    return retries.Retry(
        predicate=retries.if_exception_type(
            exceptions.TooManyRequests,
            exceptions.InternalServerError,
            exceptions.BadGateway,
            exceptions.ServiceUnavailable,
            exceptions.GatewayTimeout,
        ),
        initial=initial,
        maximum=8.0,
        multiplier=2.0,
        timeout=timeout,
    )


# -- the discovery clients of the provisioner (google-api-python-client) ---------------------------------------------


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a google-api-python-client ``HttpError``; None for anything else."""
    from googleapiclient.errors import HttpError

    return int(exc.resp.status) if isinstance(exc, HttpError) else None


def google_status(exc: BaseException) -> str:
    """Google's canonical status of an ``HttpError`` (``ABORTED``, ``NOT_FOUND`` …) from its JSON error body."""
    from googleapiclient.errors import HttpError

    if not isinstance(exc, HttpError):
        return ""
    try:
        body = json.loads(exc.content or b"{}")
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("status", "")) if isinstance(error, dict) else ""


@contextlib.contextmanager
def api_errors(context: str = "") -> Iterator[None]:
    """The provisioner's boundary: discovery-client and google-auth exceptions leave as pushpool errors."""
    from googleapiclient.errors import HttpError

    prefix = f"{context}: " if context else ""
    try:
        yield
    except PushpoolError:
        raise
    except HttpError as exc:
        code = http_status(exc) or 0
        why = f"{code}: {exc._get_reason()}"  # Google's message (the error body's), without the request URL
        if code in RETRIED_CODES:
            raise BackendUnavailableError(f"{prefix}Google is unavailable: {why}", backend=NAME) from exc
        raise BackendError(f"{prefix}{why}", backend=NAME) from exc
    except Exception as exc:
        translated = translate_google_error(exc, context)
        if translated is None:
            raise
        raise translated from exc
