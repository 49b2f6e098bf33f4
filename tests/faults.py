"""The clouds' bad days, for the local emulators: one fault-injection facility every emulator consults.

A test tells an emulator's :class:`Faults` (its ``bad_days``) what goes wrong; the emulator asks it once per request
(:meth:`Faults.check`) and answers the fault *as that provider's API spells it* (the ``*_answer`` functions below), so
the real SDK client meets what it would meet in production: its own retries, its own exception type. What a test can
ask for:

* ``fail_next(operation, kind, times)`` — the next ``times`` calls matching ``operation`` answer ``kind``;
* ``throttle_for(seconds, operation)`` — every matching call throttled until ``seconds`` have passed;
* ``operations_take(polls)`` — a long-running operation stays in progress for ``polls`` polls (:meth:`still_running`);
* ``list_after(seconds)`` — a created object shows in lists only ``seconds`` after it was created (:meth:`listed`);
* ``limit(quota)`` — at most ``quota`` objects per scope (region, resource group, app): the provider's quota error
  (:meth:`over_quota`).

``operation`` is an fnmatch pattern, case-insensitive, over what the emulator names a call: ``"METHOD /path"`` for the
REST emulators (``"POST */jobs"``), the RPC name for Modal (``"SandboxCreateV2"``), the action for AWS's JSON protocol
(``"RunTask"``). ``kind`` is one of :data:`KINDS`: ``throttle`` (rate limited), ``unavailable`` (503), ``internal``
(500). ``injected`` records every fault answered, ``(operation, kind)``, for the tests' counts.

Where each spelling comes from (checked against the provider's definition, never against pushpool):

* Google (Cloud Run, Cloud Tasks): the ``Status`` error body ``{"error": {"code", "message", "status"}}`` of the
  discovery documents google-api-python-client ships (``run.v2.json``'s ``GoogleRpcStatus``), HTTP/canonical code
  pairs from ``google/rpc/code.proto`` (429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 500 INTERNAL); a quota refusal
  carries an ``ErrorInfo`` detail with reason ``RESOURCE_QUOTA_EXCEEDED`` (``google/api/error_reason.proto``; the
  reason Cloud Run gives for its jobs-per-region quota is not published: an assumption); an LRO in progress is
  ``done: false`` (``google/longrunning/operations.proto``).
* ARM (ACI): 429 with ``Retry-After`` (seconds) and ``{"error": {"code": "TooManyRequests", "message"}}`` — ARM's
  throttling (learn.microsoft.com "Understand how Azure Resource Manager throttles requests"); azure-core's
  ``RetryPolicy`` reads ``Retry-After`` (``azure.core.pipeline.policies._utils.get_retry_after``) and retries 429, 500,
  502-504; 503 ``ServiceUnavailable``, 500 ``InternalServerError``; an async operation ``InProgress`` while polled
  (``Azure-AsyncOperation``, ARM's async-operations guideline).
* Azure Storage queues: throttling is 503 ``ServerBusy`` (Storage's "Common REST API error codes"), in Storage's XML
  error body with ``x-ms-error-code``; 500 ``InternalError``.
* Modal: gRPC status codes; the SDK maps RESOURCE_EXHAUSTED to ``ResourceExhaustedError`` and UNAVAILABLE/INTERNAL to
  ``ServiceError``/``InternalError`` (``modal/_grpc_client.py``'s ``_STATUS_TO_EXCEPTION``) after retrying the
  transient ones (``modal/_utils/grpc_utils.py``'s ``RETRYABLE_GRPC_STATUS_CODES``).
* Coiled: HTTP 429 with ``Retry-After`` and ``{"detail": …}`` (Django REST framework's ``Throttled``, which Coiled's
  API server answers with — an assumption from its error bodies, the SDK is not open about it), 503/500.
* AWS: the JSON protocol's error, ``{"__type": "ThrottlingException", "message": "Rate exceeded"}`` with HTTP 400 and
  ``x-amzn-ErrorType`` (botocore's ``parsers.BaseJSONParser``); botocore's standard retry mode retries it
  (``botocore/retries/standard.py``'s ``ThrottledRetryableChecker._THROTTLED_ERROR_CODES``) and any 500/502/503/504
  (``TransientRetryableChecker._TRANSIENT_STATUS_CODES``): ``ServiceUnavailableException`` 503, ``ServerException``
  500 (ECS's server error, ``ecs/2014-11-13/service-2.json``).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("throttle", "unavailable", "internal")


@dataclass
class Fault:
    kind: str
    retry_after: float = 0.0  # seconds, for the answers that carry Retry-After


@dataclass
class _Rule:
    pattern: str
    fault: Fault
    times: int | None  # calls left; None: until ``until``
    until: float | None


class Faults:
    """One emulator's bad days; thread-safe (the emulators serve from many threads)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._polls: dict[str, int] = {}
        self.injected: list[tuple[str, str]] = []
        self.lro_polls = 0
        self.list_delay = 0.0
        self.quota: int | None = None

    # -- what tests ask for --------------------------------------------------------------------------------------

    def fail_next(self, operation: str = "*", kind: str = "throttle", times: int = 1, retry_after: float = 0.0) -> None:
        self._add(_Rule(operation, Fault(_kind(kind), retry_after), times, None))

    def throttle_for(self, seconds: float, operation: str = "*", retry_after: float = 0.0) -> None:
        self._add(_Rule(operation, Fault("throttle", retry_after), None, self.clock() + seconds))

    def operations_take(self, polls: int) -> None:
        self.lro_polls = polls

    def list_after(self, seconds: float) -> None:
        self.list_delay = seconds

    def limit(self, quota: int | None) -> None:
        self.quota = quota

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._polls.clear()
            self.injected.clear()
            self.lro_polls, self.list_delay, self.quota = 0, 0.0, None

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, k in self.injected if kind is None or k == kind)

    # -- what emulators ask (the hooks) ------------------------------------------------------------------------

    def check(self, operation: str) -> Fault | None:
        """The fault this call answers, if any (consumes one of a ``fail_next`` rule's calls)."""
        now = self.clock()
        with self._lock:
            self._rules = [r for r in self._rules if (r.times is None or r.times > 0) and (r.until or now + 1) > now]
            for rule in self._rules:
                if fnmatch.fnmatchcase(operation.lower(), rule.pattern.lower()):
                    if rule.times is not None:
                        rule.times -= 1
                    self.injected.append((operation, rule.fault.kind))
                    return rule.fault
        return None

    def still_running(self, operation_id: str) -> bool:
        """Whether this poll of the long-running operation ``operation_id`` must still answer in progress."""
        with self._lock:
            seen = self._polls.get(operation_id, 0)
            self._polls[operation_id] = seen + 1
            return seen < self.lro_polls

    def listed(self, created: float) -> bool:
        """Whether an object created at ``created`` (epoch seconds) shows in lists yet."""
        return self.clock() - created >= self.list_delay

    def over_quota(self, count: int) -> bool:
        """Whether creating one more object, ``count`` existing in its scope, exceeds the quota."""
        return self.quota is not None and count >= self.quota

    def _add(self, rule: _Rule) -> None:
        with self._lock:
            self._rules.append(rule)


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}: one of {KINDS}")
    return kind


# -- the answers, as each API spells them --------------------------------------------------------------------------

_GOOGLE = {
    "throttle": (
        429,
        "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'.",
        "RATE_LIMIT_EXCEEDED",
    ),
    "unavailable": (503, "The service is currently unavailable.", ""),
    "internal": (500, "Internal error encountered.", ""),
}


def google_error(fault: Fault) -> tuple[int, str, list[dict[str, Any]]]:
    """(HTTP code, message, details): the emulator's error body adds the canonical ``status`` of the code."""
    code, message, reason = _GOOGLE[fault.kind]
    return code, message, [_error_info(reason)] if reason else []


def google_quota(quota: int, what: str) -> tuple[int, str, list[dict[str, Any]]]:
    return 429, f"Quota exceeded: at most {quota} {what}.", [_error_info("RESOURCE_QUOTA_EXCEEDED", str(quota))]


def _error_info(reason: str, limit: str = "") -> dict[str, Any]:
    metadata = {"quota_limit_value": limit} if limit else {}
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": metadata,
    }


_ARM = {
    "throttle": (429, "TooManyRequests", "The request is being throttled."),
    "unavailable": (503, "ServiceUnavailable", "The service is temporarily unavailable."),
    "internal": (500, "InternalServerError", "An internal server error occurred."),
}


def arm_answer(fault: Fault) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, code, message = _ARM[fault.kind]
    headers = {"Retry-After": f"{fault.retry_after:g}"} if status in (429, 503) else {}
    return status, headers, {"error": {"code": code, "message": message}}


_STORAGE = {
    "throttle": (503, "ServerBusy", "The server is currently unable to receive requests. Please retry your request."),
    "unavailable": (
        503,
        "ServerBusy",
        "The server is currently unable to receive requests. Please retry your request.",
    ),
    "internal": (500, "InternalError", "The server encountered an internal error. Please retry the request."),
}


def storage_answer(fault: Fault) -> tuple[int, str, str]:
    """(HTTP status, x-ms-error-code, message)."""
    return _STORAGE[fault.kind]


def grpc_status(fault: Fault) -> Any:
    from grpclib.const import Status

    return {"throttle": Status.RESOURCE_EXHAUSTED, "unavailable": Status.UNAVAILABLE, "internal": Status.INTERNAL}[
        fault.kind
    ]


def coiled_answer(fault: Fault) -> tuple[int, dict[str, str], dict[str, Any]]:
    if fault.kind == "throttle":
        wait = f"{fault.retry_after:g}"
        return 429, {"Retry-After": wait}, {"detail": f"Request was throttled. Expected available in {wait} seconds."}
    if fault.kind == "unavailable":
        return 503, {}, {"detail": "Service temporarily unavailable, try again later."}
    return 500, {}, {"detail": "A server error occurred."}


_AWS = {
    "throttle": (400, "ThrottlingException", "Rate exceeded"),
    "unavailable": (503, "ServiceUnavailableException", "Service Unavailable"),
    "internal": (500, "ServerException", "Internal server error"),
}


def aws_answer(fault: Fault) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, code, message = _AWS[fault.kind]
    return status, {"x-amzn-ErrorType": code}, {"__type": code, "message": message}
