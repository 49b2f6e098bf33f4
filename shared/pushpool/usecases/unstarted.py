"""unstarted: delete jobs that were made for a run's attempt but never started, once the run is final or gone.

A submit that dies (or meets an error) between creating a job and running it leaves a job with no execution; when
that attempt is never retried nothing else would ever delete it, and Cloud Run counts every job against its 1,000 per
region. Each tick asks every backend that can tell (:class:`~pushpool.providers.base.SweepsUnstartedJobs`) for such
jobs where the served pools put theirs (one list call per location), reads their runs in one Prefect call, and deletes
the jobs whose run is final or no longer exists. A run still in flight keeps its job: its submit may yet run it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pushpool.errors import PushpoolError
from pushpool.prefect_api.models import TERMINAL_STATES
from pushpool.providers.base import SweepsUnstartedJobs
from pushpool.usecases.job_spec import PoolCredentials

if TYPE_CHECKING:
    from pushpool.prefect_api.models import WorkPool
    from pushpool.usecases.deps import Deps
    from pushpool.usecases.tick_report import TickReport

log = logging.getLogger("pushpool.usecases.unstarted")
DELETED = "delete-unstarted"


def sweep_unstarted(deps: Deps, pools: Sequence[WorkPool], report: TickReport) -> None:
    """Delete the unstarted jobs of final or deleted runs; a failing backend is reported, the others go on."""
    by_backend: dict[str, tuple[Any, list[Mapping[str, Any]], list[Mapping[str, Any] | None]]] = {}
    credentials = PoolCredentials(deps.settings, deps.orchestrator)  # each pool's jobs listed with its credentials
    for pool in pools:
        try:
            backend = deps.backend_for_pool(pool)
            if not isinstance(backend, SweepsUnstartedJobs):
                continue
            own = credentials.of(pool)
        except PushpoolError:
            continue  # reported by the reconciliation already
        templates, pool_credentials = by_backend.setdefault(backend.name, (backend, [], []))[1:]
        templates.append(pool.base_job_template)
        pool_credentials.append(own)
    for name, (backend, templates, pool_credentials) in by_backend.items():
        try:
            jobs = backend.unstarted_jobs(templates, pool_credentials)
            if not jobs:
                continue
            ids = sorted({job.run_id for job in jobs})
            runs = {r.id: r for r in deps.orchestrator.filter_flow_runs({"flow_runs": {"id": {"any_": ids}}})}
            for job in jobs:
                run = runs.get(job.run_id)
                if run is not None and run.state_type not in TERMINAL_STATES:
                    continue
                if backend.delete_unstarted(job):  # False: run meanwhile, left to its run's own cleanup
                    report.reconciled[DELETED] += 1
        except Exception as exc:
            if not isinstance(exc, PushpoolError):
                log.exception("sweeping the unstarted jobs of %s failed", name)
            why = exc.one_line() if isinstance(exc, PushpoolError) else f"unexpected {type(exc).__name__}"
            report.errors.append(f"unstarted jobs of {name}: {why}")
