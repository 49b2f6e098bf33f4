"""triggers: what a runtime offers for delayed delivery (a timer in ``pushpool serve``, a delayed SQS message on AWS,
a Cloud Tasks task on Google, a Storage queue message on Azure), as the use-cases see it. ``usecases/punctual.py``
arms them; ``Deps.trigger`` holds the runtime's. Kept apart from both so that neither imports the other.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable


@runtime_checkable
class DelayedTrigger(Protocol):
    """A runtime's delayed delivery: calls submit for ``run_id`` at ``at`` (once; soon after, or up to
    ``early_seconds`` before it, which submit waits out).

    ``max_delay_seconds``: the longest delay it can deliver (None: any). Arming the same run again for the same time
    may deliver twice (submit is idempotent); arming it for a new time supersedes nothing: the stale delivery finds
    the run not due and re-arms.
    """

    max_delay_seconds: float | None
    early_seconds: float

    def arm(self, run_id: str, at: dt.datetime) -> None: ...


@runtime_checkable
class PoolTrigger(Protocol):
    """A DelayedTrigger that can also deliver "sweep pool ``pool_name``" at ``at`` (one message for many runs)."""

    def arm_pool(self, pool_name: str, at: dt.datetime) -> None: ...
