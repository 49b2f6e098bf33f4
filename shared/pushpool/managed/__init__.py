"""Managed execution: ``prefect:managed`` pools whose runs go to a backend the operator of pushpool chose, inside the
limits of the workspace's tier (concurrent runs, managed pools, compute hours a month, memory and run time per run).

This package holds what needs no Prefect API call: the pool type, the tiers (``tiers.py``), the pool's base job
template, the validation of its job variables and the bootstrap command that installs ``pip_packages`` before the
flow starts (``job.py``). The use-cases that read Prefect are ``usecases/managed.py`` (admission, refusals) and
``usecases/usage.py`` (compute hours and the usage report).

Example:
    >>> is_managed("prefect:managed"), is_managed("ecs:push")
    (True, False)
"""

from __future__ import annotations

MANAGED_POOL_TYPE = "prefect:managed"
# The tag pushpool puts on a managed run before starting its job: compute hours count the runs with it, which stay
# tagged when their pool is deleted (Prefect then unlinks them from the pool).
MANAGED_TAG = "pushpool:managed"


def is_managed(pool_type: str | None) -> bool:
    """Whether ``pool_type`` is the managed pool type."""
    return pool_type == MANAGED_POOL_TYPE
