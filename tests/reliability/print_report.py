"""Print the reliability table recorded by tests/reliability (see `make reliability-report`): one table per provider,
then each provider's totals — lost, duplicated, stuck — and exit 1 if any is not zero."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["ecs", "aci", "cloudrun", "modal", "coiled", "process"]

path = Path(sys.argv[1] if len(sys.argv) > 1 else ".reliability/report.json")
rows = json.loads(path.read_text())
for row in rows:
    row.setdefault("provider", "process")  # rows written before providers were recorded
providers = sorted({r["provider"] for r in rows}, key=lambda p: (ORDER.index(p) if p in ORDER else len(ORDER), p))
head = f"{'scenario':<58}{'runs':>6}{'faults':>8}{'lost':>6}{'dup':>5}{'stuck':>7}{'longest repair':>16}"
totals = []
for provider in providers:
    mine = [r for r in rows if r["provider"] == provider]
    print(f"\n== {provider} ==")
    print(head)
    print("-" * len(head))
    for r in mine:
        print(
            f"{r['scenario']:<58}{r['runs']:>6}{r['faults']:>8}{r['lost']:>6}{r['duplicated']:>5}{r['stuck']:>7}"
            f"{r['longest_repair_s']:>14.1f} s"
        )
    totals.append(
        (
            provider,
            len(mine),
            sum(r["runs"] for r in mine),
            sum(r["faults"] for r in mine),
            sum(r["lost"] for r in mine),
            sum(r["duplicated"] for r in mine),
            sum(r["stuck"] for r in mine),
        )
    )
print(f"\n{'provider':<12}{'scenarios':>10}{'runs':>7}{'faults':>8}{'lost':>6}{'dup':>5}{'stuck':>7}")
for provider, scenarios, runs, faults, lost, dup, stuck in totals:
    print(f"{provider:<12}{scenarios:>10}{runs:>7}{faults:>8}{lost:>6}{dup:>5}{stuck:>7}")
bad = sum(t[4] + t[5] + t[6] for t in totals)
print(
    f"\n{len(rows)} scenarios on {len(providers)} providers, {sum(t[2] for t in totals)} runs, "
    f"{sum(t[3] for t in totals)} faults: {'0 lost, 0 duplicated, 0 stuck' if bad == 0 else f'{bad} problems'}"
)
sys.exit(1 if bad else 0)
