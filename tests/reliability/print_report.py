"""Print the reliability table recorded by tests/reliability (see `make reliability-report`): one table per provider
(a scenario that cannot apply to it says why), each provider's totals — lost, duplicated, stuck — then the scenarios
that run on several providers as a scenario × provider matrix; exit 1 if any total is not zero."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["process", "ecs", "aci", "cloudrun", "modal", "coiled"]

path = Path(sys.argv[1] if len(sys.argv) > 1 else ".reliability/report.json")
every = json.loads(path.read_text())
for row in every:
    row.setdefault("provider", "process")  # rows written before providers were recorded
rows = [r for r in every if "skipped" not in r]
skipped = [r for r in every if "skipped" in r]
providers = sorted({r["provider"] for r in every}, key=lambda p: (ORDER.index(p) if p in ORDER else len(ORDER), p))
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
    for r in skipped:
        if r["provider"] == provider:
            print(f"{r['scenario']:<58}  skipped: {r['skipped']}")
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

# The scenarios run on several providers, one line each: lost/duplicated/stuck per provider ("-": not run there,
# "skip": cannot apply there, the reason in that provider's table).
cells: dict[str, dict[str, str]] = {}
for r in rows:
    cells.setdefault(r["scenario"], {})[r["provider"]] = f"{r['lost']}/{r['duplicated']}/{r['stuck']}"
for r in skipped:
    cells.setdefault(r["scenario"], {})[r["provider"]] = "skip"
shared = {s: c for s, c in cells.items() if sum(v != "skip" for v in c.values()) > 1}
if shared:
    print(f"\nlost/duplicated/stuck per provider\n{'scenario':<58}" + "".join(f"{p:>10}" for p in providers))
    for scenario, by_provider in shared.items():
        print(f"{scenario:<58}" + "".join(f"{by_provider.get(p, '-'):>10}" for p in providers))

bad = sum(t[4] + t[5] + t[6] for t in totals)
print(
    f"\n{len(rows)} scenarios on {len(providers)} providers ({len(skipped)} not applicable), "
    f"{sum(t[2] for t in totals)} runs, {sum(t[3] for t in totals)} faults: "
    f"{'0 lost, 0 duplicated, 0 stuck' if bad == 0 else f'{bad} problems'}"
)
sys.exit(1 if bad else 0)
