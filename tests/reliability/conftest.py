"""Reliability scenarios record what they saw; `make reliability-report` prints the table.

Each scenario adds a row: scenario, the provider it ran on (``process`` unless said), runs, faults injected, lost (a
run left Pending/Running/Cancelling with no live job), duplicated (a run that got more than one job for one claim),
stuck (not in the expected state at the end) and the longest repair (seconds from the fault to the run being right
again). A scenario that cannot apply to a provider records why instead (:meth:`Report.skip`). print_report.py prints
one table per provider and a scenario × provider matrix.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("PUSHPOOL_RELIABILITY_REPORT", ".reliability/report.json"))
SCALE = int(os.environ.get("PUSHPOOL_SOAK", "1"))  # `make soak` raises it


class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(
        self,
        scenario: str,
        *,
        provider: str = "process",
        runs: int,
        faults: int,
        lost: int = 0,
        duplicated: int = 0,
        stuck: int = 0,
        longest_repair: float = 0.0,
    ) -> None:
        self.rows.append(
            {
                "scenario": scenario,
                "provider": provider,
                "runs": runs,
                "faults": faults,
                "lost": lost,
                "duplicated": duplicated,
                "stuck": stuck,
                "longest_repair_s": round(longest_repair, 2),
            }
        )

    def skip(self, scenario: str, *, provider: str, reason: str) -> None:
        """``scenario`` cannot apply to ``provider``, for ``reason``: a row of the table that says so."""
        self.rows.append({"scenario": scenario, "provider": provider, "skipped": reason})


@pytest.fixture(scope="session")
def report() -> Report:
    collected = Report()
    yield collected
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with open(REPORT.with_suffix(".lock"), "w") as lock:  # pytest-xdist: every worker adds its rows at its end
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = json.loads(REPORT.read_text()) if REPORT.exists() else []
        names = {(r["scenario"], r["provider"]) for r in collected.rows}
        kept = [r for r in existing if (r["scenario"], r.get("provider", "process")) not in names]
        REPORT.write_text(json.dumps(kept + collected.rows, indent=1))


@pytest.fixture(scope="session")
def scale() -> int:
    return SCALE
