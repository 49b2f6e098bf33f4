"""Print the reliability table recorded by tests/reliability (see `make reliability-report`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else ".reliability/report.json")
rows = json.loads(path.read_text())
head = f"{'scenario':<54}{'runs':>6}{'faults':>8}{'lost':>6}{'dup':>5}{'stuck':>7}{'longest repair':>16}"
print(head)
print("-" * len(head))
for r in rows:
    print(
        f"{r['scenario']:<54}{r['runs']:>6}{r['faults']:>8}{r['lost']:>6}{r['duplicated']:>5}{r['stuck']:>7}"
        f"{r['longest_repair_s']:>14.1f} s"
    )
bad = sum(r["lost"] + r["duplicated"] + r["stuck"] for r in rows)
print(
    f"\n{len(rows)} scenarios, {sum(r['runs'] for r in rows)} runs, {sum(r['faults'] for r in rows)} faults: "
    f"{'0 lost, 0 duplicated, 0 stuck' if bad == 0 else f'{bad} problems'}"
)
sys.exit(1 if bad else 0)
