"""The Azure boundary of the ACI provider: azure-core and azure-identity exceptions leave as pushpool errors, by HTTP
status and ARM error code (never by message text). Messages carry ARM's code and message, never a request body."""

from __future__ import annotations

from contextlib import AbstractContextManager

from pushpool.errors import (
    BackendError,
    BackendUnavailableError,
    QuotaExceededError,
    retry_after_seconds,
    translating,
)

NAME = "aci"
# ARM error codes of ACI quota and capacity refusals (retryable later; the run is crashed with Azure's message).
QUOTA_CODES = frozenset(
    {
        "ContainerGroupQuotaReached",
        "StandardCoresQuotaExceeded",
        "QuotaExceeded",
        "SkuNotAvailable",
    }
)


def azure_errors() -> AbstractContextManager[None]:
    """The Azure boundary: SDK exceptions leave as pushpool errors."""
    return translating(translate_azure_error)


def translate_azure_error(exc: Exception) -> BackendError | None:
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover - azure-identity is part of the extra
        CredentialUnavailableError = ()  # type: ignore[assignment,misc]

    if isinstance(exc, CredentialUnavailableError):
        return BackendError(f"no Azure credential available to pushpool: {_first_line(exc)}", backend=NAME)
    if isinstance(exc, ClientAuthenticationError):
        return BackendError(f"Azure refused pushpool's credential: {arm_message(exc)}", backend=NAME)
    if isinstance(exc, HttpResponseError):
        status, code = exc.status_code or 0, arm_error_code(exc)
        message = arm_message(exc)
        headers = getattr(exc.response, "headers", None) or {}
        wait = retry_after_seconds(headers.get("Retry-After"))
        if status == 429:
            return BackendUnavailableError(
                f"Azure throttled the request (429): {message}", backend=NAME, retry_after=wait
            )
        if code in QUOTA_CODES:
            return QuotaExceededError(message, backend=NAME)
        if status >= 500:
            return BackendUnavailableError(
                f"Azure is unavailable ({status}): {message}", backend=NAME, retry_after=wait
            )
        return BackendError(message, backend=NAME)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return BackendUnavailableError(f"cannot reach Azure: {_first_line(exc)}", backend=NAME)
    if isinstance(exc, AzureError):
        return BackendError(f"Azure client error: {_first_line(exc)}", backend=NAME)
    return None


def arm_error_code(exc: BaseException | None) -> str:
    """ARM's error code of an HttpResponseError (``ResourceNotFound`` …), else ""."""
    error = getattr(exc, "error", None)
    return str(getattr(error, "code", "") or "")


def arm_status(exc: BaseException | None) -> int:
    return int(getattr(exc, "status_code", 0) or 0)


def arm_message(exc: BaseException) -> str:
    error = getattr(exc, "error", None)
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    if code or message:
        return f"{code or arm_status(exc)}: {message or ''}".strip()
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
