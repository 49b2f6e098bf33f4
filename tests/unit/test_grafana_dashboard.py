"""docs/grafana-dashboard.json reads only series pushpool exports (usecases/metrics.py), with their own labels: a
renamed metric or label fails here, not on an operator's empty panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pushpool.usecases.metrics import CATALOGUE, HISTOGRAM

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())


def _series() -> dict[str, set[str]]:
    """Every series name a query may name, with the labels it may use."""
    found: dict[str, set[str]] = {}
    for spec in CATALOGUE:
        names = [spec.name]
        if spec.kind == HISTOGRAM:
            names = [f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"]
        for name in names:
            found[name] = set(spec.labels) | ({"le"} if name.endswith("_bucket") else set())
    return found


def test_every_query_names_exported_series_and_their_labels() -> None:
    known = _series()
    queries = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    assert len(queries) >= 6
    for query in queries:
        names = re.findall(r"\bpushpool_[a-z_]+", query)
        assert names, query
        for name in names:
            assert name in known, f"{name} in {query!r} is not exported"
            labels = set(re.findall(r"(\w+)\s*(?:=~|!=|=)\s*\"", query))
            grouped = {label.strip() for group in re.findall(r"by \(([^)]*)\)", query) for label in group.split(",")}
            assert labels | grouped <= known[name] | {"le"}, f"{query!r}: labels not on {name}"


def test_the_pool_variable_reads_an_exported_series() -> None:
    (pool,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == "pool"]
    assert re.search(r"label_values\((pushpool_\w+), pool\)", pool["definition"]).group(1) in _series()
