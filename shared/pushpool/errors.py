"""The error taxonomy of pushpool: every failure leaves the library as one of these.

Errors are grouped by how a caller should react, and each class carries the HTTP status an entry point
answers with (``http_status``) and whether retrying the same call later can succeed (``retryable``)::

    PushpoolError                        base; http_status 500
    ├── InvalidRequestError              400  bad input: malformed body, missing or malformed run id …
    │   ├── UnauthorizedError            401  missing or wrong webhook token / signature / admin token
    │   ├── ForbiddenError               403  a valid credential that does not authorize this (the webhook token on
    │   │                                     serve's /provision or /monitor)
    │   ├── UnknownObjectError           404  the request names something that does not exist (an unknown run id,
    │   │                                     an unknown path)
    │   ├── MethodNotAllowedError        405  a method the path does not answer (carries ``allowed``)
    │   ├── LengthRequiredError          411  a body of unknown length (a Transfer-Encoding other than chunked)
    │   ├── RequestTooLargeError         413  body over the limit, refused before parsing
    │   ├── UnsupportedMediaTypeError    415  a body that is not declared as JSON (``Content-Type: text/plain``)
    │   ├── HeadersTooLargeError         431  a header line or the number of headers over the limit
    │   └── UnsupportedPoolError         422  the run's pool is not a push pool, or its type is unknown
    ├── ConfigurationError               500  pushpool itself is mis-configured (missing URL, bad setting)
    ├── TemplateError                    422  a job template or job variables that do not render
    │   └── JobRefusedError              422  a managed run's job variables or code source are not allowed
    ├── OrchestratorError                502  the Prefect API answered with an error
    │   ├── OrchestratorUnavailableError 503  unreachable, timed out, 429/502/503 after retries (retryable)
    │   ├── OrchestratorAuthError        502  Prefect refused our credentials (401/403)
    │   └── ObjectNotFoundError          404  the object does not exist
    └── BackendError                     502  the compute backend failed (carries ``backend``, ``retry_after``)
        ├── BackendUnavailableError      503  throttled, 5xx, timeout (retryable)
        ├── QuotaExceededError           503  capacity or quota (retryable later)
        └── JobNotFoundError             404  the job is gone: cancel treats it as done, monitor as crashed

Adapters translate their SDK's exceptions into this tree at the boundary (``raise … from exc``); nothing
above the adapters inspects an SDK exception or an error message. A retryable backend error at submit gives the run
back to Scheduled with backoff (usecases/submit.py), never crashes it at once; ``retry_after`` carries the cloud's own
``Retry-After`` (seconds) where it sent one.
"""

from __future__ import annotations

from typing import ClassVar


class PushpoolError(Exception):
    """Base of every error pushpool raises on purpose."""

    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def one_line(self) -> str:
        """The message on a single line, for HTTP answers and state messages."""
        return " ".join(self.message.split())


class InvalidRequestError(PushpoolError):
    http_status = 400


class UnauthorizedError(InvalidRequestError):
    http_status = 401


class ForbiddenError(InvalidRequestError):
    http_status = 403


class UnknownObjectError(InvalidRequestError):
    """The request names what does not exist: an unknown flow run (not an error of Prefect's API: of the caller)."""

    http_status = 404


class MethodNotAllowedError(InvalidRequestError):
    http_status = 405

    def __init__(self, message: str, *, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed  # the methods the path answers: the ``Allow`` header


class LengthRequiredError(InvalidRequestError):
    http_status = 411


class RequestTooLargeError(InvalidRequestError):
    http_status = 413


class UnsupportedMediaTypeError(InvalidRequestError):
    http_status = 415


class HeadersTooLargeError(InvalidRequestError):
    http_status = 431


class UnsupportedPoolError(InvalidRequestError):
    http_status = 422


class ConfigurationError(PushpoolError):
    http_status = 500


class TemplateError(PushpoolError):
    http_status = 422


class MissingValueError(TemplateError):
    """A field the job needs has no value (the template and job variables leave it unset): a job variable may give it,
    so a pool is not refused for it (``usecases/job_check.py``); a run is."""


class JobRefusedError(TemplateError):
    """A managed run pushpool will not start as asked (an ``image``, bad ``pip_packages``, no code to pull)."""


class OrchestratorError(PushpoolError):
    http_status = 502

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class OrchestratorUnavailableError(OrchestratorError):
    http_status = 503
    retryable = True


class OrchestratorAuthError(OrchestratorError):
    http_status = 502


class ObjectNotFoundError(OrchestratorError):
    http_status = 404


class BackendError(PushpoolError):
    http_status = 502

    def __init__(self, message: str, *, backend: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.retry_after = retry_after  # seconds the cloud asked to wait (Retry-After), when it said


def retry_after_seconds(value: object) -> float | None:
    """A ``Retry-After`` header's delay in seconds (delta-seconds; an HTTP date or junk: None), at most a day."""
    try:
        seconds = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return min(seconds, 86400.0) if seconds >= 0 else None


class BackendUnavailableError(BackendError):
    http_status = 503
    retryable = True


class QuotaExceededError(BackendError):
    http_status = 503
    retryable = True


class JobNotFoundError(BackendError):
    http_status = 404
