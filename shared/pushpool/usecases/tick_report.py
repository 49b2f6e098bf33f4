"""tick_report: what one monitor tick did (``usecases/monitor.py``), as serve, the functions and the CLI report it. Kept
apart from the monitor so that the parts a tick calls (``usecases/unstarted.py``) can take it without importing the
monitor.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class TickReport:
    pools: int = 0
    served: list[str] = field(default_factory=list)  # the names of the pools this tick served (and heartbeated into)
    dispatched: Counter = field(default_factory=Counter)
    reconciled: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. managed pools not served (over the pool limit)
    managed: dict | None = None  # the managed workspace's usage (usecases/usage.py), when it has pools served
    in_flight: dict[str, int] | None = None  # pool -> its runs Pending/Running/Cancelling (None: not listed)

    def as_dict(self) -> dict:
        found = {
            "pools": self.pools,
            "dispatched": dict(self.dispatched),
            "reconciled": dict(self.reconciled),
            "errors": self.errors,
        }
        if self.notes:
            found["notes"] = self.notes
        if self.managed is not None:
            found["managed"] = self.managed
        return found
