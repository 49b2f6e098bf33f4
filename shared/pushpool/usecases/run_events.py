"""What the use-cases call when they act on a run: record the action as a ``RunEvent`` (usecases/events.py) with what
Prefect's UI and automations need (the run, its deployment, flow and pool, the provider, the job), and tag the log
lines written meanwhile with the run, its pool and its job.

Emitting never raises (a bug here must not fail a submit) and names no provider: the provider's name and its job's
console URL come from the registry entry of the pool's type.

Log lines: :func:`run_context` sets the run id, pool and job id for the code it wraps (a ``contextvars`` context, so
threads and the monitor's lanes each keep their own); :func:`install_log_fields` (each entry point, on the handlers
it sets up) makes every log record written in such a context carry them as the structured fields ``flow_run_id``,
``work_pool`` and ``job_id`` — the functions' JSON logs (Powertools on AWS, Cloud Logging on Google) show them as
fields, ``pushpool serve`` at the end of its lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import types
from collections.abc import Iterator, Mapping
from typing import Any

from pushpool.prefect_api.models import FlowRun, WorkPool
from pushpool.usecases.deps import Deps
from pushpool.usecases.events import RunEvent

log = logging.getLogger("pushpool.usecases.run_events")

# The structured fields a log record about a run carries.
LOG_FIELDS = ("flow_run_id", "work_pool", "job_id")
_NONE: Mapping[str, str] = types.MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("pushpool_run_context", default=_NONE)


def emit(
    deps: Deps,
    action: str,
    run: FlowRun,
    pool: WorkPool | None = None,
    *,
    attempt: str | None = None,
    job_id: str | None = None,
    reason: str | None = None,
    payload: Mapping[str, Any] | None = None,
    occurred: dt.datetime | None = None,
    sequence: int | None = None,
) -> None:
    """Record that pushpool did ``action`` to ``run`` (of ``pool``). Never raises; never put a secret in ``payload``
    (no environment value, no job variable's value: what a deployment author wrote is not pushpool's to repeat)."""
    try:
        event = RunEvent(
            action=action,
            run_id=run.id,
            attempt=attempt or "",
            run_name=run.name or None,
            pool=pool.name if pool is not None else run.work_pool_name,
            pool_id=pool.id if pool is not None else None,
            pool_type=pool.type if pool is not None else None,
            provider=_provider(deps, pool),
            deployment_id=run.deployment_id,
            flow_id=run.flow_id,
            job_id=job_id,
            reason=reason,
            payload={k: v for k, v in (payload or {}).items() if v is not None},
            occurred=occurred or deps.clock.now(),
            sequence=sequence,
        )
    except Exception:
        log.exception("run %s: could not record the %s event", run.id, action)
        return
    deps.events.emit(event)


def console_url(deps: Deps, pool: WorkPool, job_id: str | None) -> str | None:
    """The page of the job in its provider's console (the link from the run to its job); None when there is none."""
    if not job_id:
        return None
    try:
        return deps.provider(pool.type).job_console_url(job_id)
    except Exception:  # noqa: BLE001 - a link is a courtesy
        return None


def _provider(deps: Deps, pool: WorkPool | None) -> str | None:
    if pool is None:
        return None
    try:
        return deps.provider(pool.type).name
    except Exception:  # noqa: BLE001 - a pool this deployment does not serve: no provider to name
        return None


# --- log lines that join up -------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_context(run_id: str | None = None, pool: str | None = None, job_id: str | None = None) -> Iterator[None]:
    """Tag the log records made inside with the run (``flow_run_id``), its pool (``work_pool``) and its job
    (``job_id``); what is not given is kept from an enclosing context."""
    current = dict(_CONTEXT.get())
    current.update({k: v for k, v in zip(LOG_FIELDS, (run_id, pool, job_id), strict=True) if v})
    token = _CONTEXT.set(current)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_job(job_id: str | None) -> None:
    """Add the job's id to the current run context (once submit knows it), for the rest of that context."""
    if job_id and _CONTEXT.get():
        _CONTEXT.set({**_CONTEXT.get(), "job_id": job_id})


def log_fields() -> Mapping[str, str]:
    """The run context's fields now (empty outside a run)."""
    return _CONTEXT.get()


class RunFieldsFilter(logging.Filter):
    """Gives each record made inside a :func:`run_context` its fields as attributes (a record that set one itself,
    through ``extra``, keeps its own). A handler filter: it sees every logger's records, set after ``extra``."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def install_log_fields(*handlers: logging.Handler) -> None:
    """Add the run fields to what ``handlers`` write (idempotent); each entry point passes the handlers it set up."""
    for handler in handlers:
        if not any(isinstance(f, RunFieldsFilter) for f in handler.filters):
            handler.addFilter(RunFieldsFilter())


class RunFieldsFormatter(logging.Formatter):
    """A text formatter that ends a line about a run with its fields (``run=… pool=… job=…``), for ``serve``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{short}={record.__dict__[key]}" for key, short in _SHORT.items() if record.__dict__.get(key)]
        return f"{line} [{' '.join(fields)}]" if fields else line


_SHORT = {"flow_run_id": "run", "work_pool": "pool", "job_id": "job"}
