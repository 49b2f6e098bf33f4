"""HTTP-shaped entry points: request bytes in, (status, JSON) out. Used by ``pushpool serve`` and the functions.

Every answer is one JSON object; errors are ``{"error": "<one line>"}`` with the status from the error taxonomy.
Bad input changes nothing: the body is authenticated, size-checked, its ``Content-Type`` checked (JSON or none:
:func:`check_content_type`) and validated before any state is touched. An unknown flow run is 404.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pushpool.entrypoints.auth import AdminAuth, WebhookAuth
from pushpool.entrypoints.event_stream import SeenEvents
from pushpool.errors import (
    InvalidRequestError,
    ObjectNotFoundError,
    PushpoolError,
    RequestTooLargeError,
    UnknownObjectError,
    UnsupportedMediaTypeError,
    UnsupportedPoolError,
)
from pushpool.prefect_api.models import FlowRun, StateType, WorkPool
from pushpool.usecases.deps import Deps
from pushpool.usecases.metrics import record_tick
from pushpool.usecases.monitor import sweep_pool, tick
from pushpool.usecases.provision import provision_pool
from pushpool.usecases.punctual import arm
from pushpool.usecases.reconcile import reconcile_one
from pushpool.usecases.submit import Reads, not_ready, submit_run
from pushpool.usecases.tick_report import TickReport

log = logging.getLogger("pushpool.entrypoints.http")

MAX_BODY_BYTES = 64 * 1024
EARLY_DELIVERY_SECONDS = 1.5  # how early a delayed trigger may arrive and still be waited out by submit
DUPLICATE = "duplicate"  # the outcome of a second delivery of an event this process already acted on


@dataclass(frozen=True)
class Response:
    status: int
    body: dict[str, Any]

    def json_bytes(self) -> bytes:
        return json.dumps(self.body).encode()


class FlowRunEvent(BaseModel):
    """The body Prefect's automation (or any client) sends to submit."""

    model_config = ConfigDict(extra="ignore")

    flow_run_id: str = Field(min_length=1, max_length=64)
    event: str | None = Field(default=None, max_length=200)
    event_id: str | None = Field(default=None, max_length=64)

    @field_validator("flow_run_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("flow_run_id must be a UUID") from None


class ProvisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    type: str = Field(min_length=1, max_length=100)
    submit_url: str | None = Field(default=None, max_length=2000)
    concurrency_limit: int | None = Field(default=None, ge=0, strict=True)  # a JSON integer, not "5" or "-0"
    dry_run: bool = False
    provision_infra: bool = False  # also create the cloud resources (plan_only: show the plan, change nothing)
    plan_only: bool = False
    credentials: Literal["role", "access-key"] = "role"
    region: str | None = Field(default=None, max_length=40)


JSON_MEDIA_TYPE = "application/json"


def check_content_type(headers: Mapping[str, str]) -> None:
    """A body is JSON: ``Content-Type: application/json`` (with parameters, e.g. ``; charset=utf-8``), or no
    Content-Type at all (a client that sends none is read as JSON: Prefect's Webhook blocks made by provision send
    application/json).

    Raises:
        UnsupportedMediaTypeError: any other media type (``text/plain``, a form), with what to send instead.
    """
    given = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if given is None:
        return
    media_type = given.split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = " ".join(given.split())[:80] or "(empty)"
        raise UnsupportedMediaTypeError(f"Content-Type {shown} is not accepted: send Content-Type: {JSON_MEDIA_TYPE}")


def parse_body(model: type[BaseModel], body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise RequestTooLargeError(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES}-byte limit")
    if not body.strip():
        raise InvalidRequestError("empty body: expected a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("body is not valid JSON") from None
    except RecursionError:
        raise InvalidRequestError("body is nested too deeply") from None
    if isinstance(data, str) and data.lstrip().startswith("{"):
        # Prefect servers before 3.4.2 send a webhook's rendered payload JSON-encoded once more (their Webhook block
        # posts the text as a JSON string): the object inside is the body, checked as any other.
        try:
            data = json.loads(data)
        except ValueError:
            raise InvalidRequestError("body is a JSON string that is not a JSON object") from None
        except RecursionError:
            raise InvalidRequestError("body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("body must be a JSON object")
    try:
        return model.model_validate(data)
    except RecursionError:
        raise InvalidRequestError("body is nested too deeply") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequestError(f"{where}: {first.get('msg', 'invalid')}") from None


def _error(exc: PushpoolError) -> Response:
    return Response(exc.http_status, {"error": exc.one_line()})


def handle_submit(
    deps: Deps,
    auth: WebhookAuth,
    headers: Mapping[str, str],
    body: bytes,
    *,
    trigger: str,
    seen: SeenEvents | None = None,
) -> Response:
    """Authenticate, parse and act on one flow-run event (once per event id when ``seen`` is given)."""
    event: FlowRunEvent | None = None
    try:
        if len(body) > MAX_BODY_BYTES:
            raise RequestTooLargeError(f"body of {len(body)} bytes is over the {MAX_BODY_BYTES}-byte limit")
        auth.verify(headers, body)
        check_content_type(headers)
        event = parse_body(FlowRunEvent, body)
        if seen is not None and not seen.first(event.event_id):
            return Response(200, {"flow_run_id": event.flow_run_id, "outcome": DUPLICATE, "detail": "event handled"})
        return Response(200, handle_run_event(deps, event.flow_run_id, trigger=trigger))
    except PushpoolError as exc:
        if exc.http_status >= 500:
            log.warning("submit failed: %s", exc.one_line())
            if seen is not None and event is not None:
                seen.forget(event.event_id)  # a later delivery of this event may act on it
        return _error(exc)


class PoolSweep(BaseModel):
    """A pool trigger's message (``punctual.arm_pool``): sweep ``work_pool`` at ``at``."""

    model_config = ConfigDict(extra="ignore")

    work_pool: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    at: dt.datetime


def handle_delayed_run(deps: Deps, body: bytes) -> dict[str, Any]:
    """A delayed trigger fired (``punctual``): its message names the run, and submit acts only if it is due now; or
    it names a pool (a burst of runs due at once), and the pool is swept as a monitor tick would.

    Raises:
        InvalidRequestError: a malformed message, or a run that no longer exists (nothing to do).
    """
    try:
        sweep = json.loads(body) if len(body) <= MAX_BODY_BYTES else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        sweep = None
    if isinstance(sweep, dict) and "work_pool" in sweep:
        order = parse_body(PoolSweep, body)
        early = (order.at - deps.clock.now()).total_seconds()
        if early > EARLY_DELIVERY_SECONDS:  # not its time (a clock far off): the monitor's ticks cover the runs
            return {"work_pool": order.work_pool, "outcome": "not-due", "detail": f"due in {early:.1f} s"}
        deps.clock.sleep(max(0.0, early))  # up to a second early (whole-second delays, rounded down): wait it out
        return sweep_pool(deps, order.work_pool)
    event = parse_body(FlowRunEvent, body)
    answer = handle_run_event(deps, event.flow_run_id, trigger="delayed", arm_trigger=False)
    at = answer.get("dispatch_at")
    if answer.get("outcome") == "deferred" and at:
        due = dt.datetime.fromisoformat(at)
        early = (due - deps.clock.now()).total_seconds()
        if early <= EARLY_DELIVERY_SECONDS:
            # A delayed message arrives up to a second early (its delay is whole seconds, rounded down): wait it out.
            deps.clock.sleep(max(0.0, early))
            return handle_run_event(deps, event.flow_run_id, trigger="delayed")
        if arm(deps, event.flow_run_id, due):  # rescheduled later meanwhile: a trigger for its new time
            answer = {**answer, "detail": f"{answer.get('detail', '')} (trigger armed)"}
    return answer


def handle_run_event(deps: Deps, run_id: str, *, trigger: str, arm_trigger: bool = True) -> dict[str, Any]:
    """Act on a run we were told about: submit it if it is ready, reconcile it if it is being cancelled.

    Raises:
        UnknownObjectError: the run does not exist (404).
        UnsupportedPoolError: the run's pool is not a push pool pushpool serves.
    """
    run = _read_run(deps, run_id)
    # A run about to be submitted: its queue and deployment are read while the pool is (one round trip, not three).
    reads = Reads.start(deps, run) if not_ready(deps, run) is None else None
    pool = _read_pool(deps, run)
    if run.state_type in (StateType.CANCELLING, StateType.CANCELLED):
        return reconcile_one(deps, run, pool)
    return submit_run(deps, run, pool, trigger=trigger, reads=reads, arm_trigger=arm_trigger).as_dict()


def handle_job_event(deps: Deps, run_id: str) -> dict[str, Any]:
    """A job of ``run_id`` changed state (an ECS Task State Change, say): reconcile that run now, whatever its state.

    Raises:
        UnknownObjectError: the run does not exist (404).
        UnsupportedPoolError: the run's pool is not a push pool this deployment serves.
    """
    run = _read_run(deps, run_id)
    pool = _read_pool(deps, run)
    if run.state_type is StateType.SCHEDULED:  # an earlier attempt's job; this attempt has none yet
        return {"flow_run_id": run.id, "outcome": "not-ready", "detail": "run is Scheduled", "job_id": None}
    return reconcile_one(deps, run, pool)


def _read_run(deps: Deps, run_id: str) -> FlowRun:
    """The run we were told about, which must exist and belong to a work pool."""
    try:
        run = deps.orchestrator.read_flow_run(run_id)
    except ObjectNotFoundError:
        raise UnknownObjectError(f"unknown flow run {run_id}") from None
    if not run.work_pool_name:
        raise UnsupportedPoolError(f"flow run {run_id} has no work pool")
    return run


def _read_pool(deps: Deps, run: FlowRun) -> WorkPool:
    try:
        return deps.pool_reads.pool(run.work_pool_name or "")
    except ObjectNotFoundError:
        raise UnsupportedPoolError(f"flow run {run.id}: work pool {run.work_pool_name!r} does not exist") from None


def run_provision(deps: Deps, req: ProvisionRequest) -> dict[str, Any]:
    """Carry out a provision request: the Prefect side, and with ``provision_infra`` the cloud side first."""
    if req.provision_infra:
        from pushpool.providers import provider_for_pool_type
        from pushpool.usecases.provision_infra import provision_infra

        provider = provider_for_pool_type(req.type)
        provisioner = provider.create_provisioner(region=req.region, credentials=req.credentials)
        return provision_infra(
            deps,
            provisioner,
            pool=req.name,
            type_name=req.type,
            submit_url=req.submit_url,
            concurrency_limit=req.concurrency_limit,
            plan_only=req.plan_only or req.dry_run,  # a dry run changes nothing, in the cloud either
        ).as_dict()
    result = provision_pool(
        deps,
        name=req.name,
        type_name=req.type,
        submit_url=req.submit_url,
        concurrency_limit=req.concurrency_limit,
        dry_run=req.dry_run,
    )
    return result.as_dict()


def handle_provision(deps: Deps, body: bytes) -> Response:
    """A provision request from an operator. Its entry point has authorized the caller as one — IAM (AWS, Google),
    the admin-level function key (Azure), the admin token (serve: :func:`handle_admin`) — never by the webhook's
    credential, which Prefect's API users can read."""
    try:
        return Response(200, run_provision(deps, parse_body(ProvisionRequest, body)))
    except PushpoolError as exc:
        return _error(exc)


def timed_tick(deps: Deps, pools: list[WorkPool] | None = None) -> TickReport:
    """One monitor tick, measured into ``deps.metrics``: its duration, its errors, the in-flight runs per pool. A tick
    that raises is measured too (one error), and raises."""
    started = time.monotonic()
    try:
        report = tick(deps, pools=pools)
    except Exception:
        record_tick(deps.metrics, time.monotonic() - started, None, 1)
        raise
    record_tick(deps.metrics, time.monotonic() - started, report.in_flight, len(report.errors))
    return report


def handle_monitor(deps: Deps, pools: list[WorkPool] | None = None) -> Response:
    """One monitor tick (a timer, or an operator authorized by its entry point, as for provision) over ``pools``
    (None: every pool this deployment serves)."""
    try:
        return Response(200, timed_tick(deps, pools=pools).as_dict())
    except PushpoolError as exc:
        return _error(exc)


def handle_admin(
    deps: Deps,
    admin: AdminAuth,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    pools: Callable[[], list[WorkPool] | None] = lambda: None,
) -> Response:
    """``/provision`` or ``/monitor`` over HTTP (``pushpool serve``): the admin token first — the webhook token gets
    403 and nothing is read or changed. ``pools``: the pools a tick covers (serve's own ``pool_names``)."""
    try:
        admin.verify(headers)
        check_content_type(headers)
    except PushpoolError as exc:
        return _error(exc)
    return handle_provision(deps, body) if path == "/provision" else handle_monitor(deps, pools())
