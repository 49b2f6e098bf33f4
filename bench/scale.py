"""Monitor scale: one tick over many in-flight runs — real (Prefect on PostgreSQL + moto) and at 10,000 with the
latency-injecting fake backend (tests/fakes.py). The 10,000 runs are written into PostgreSQL directly, copied from a
real Running run made through the API (creating them one by one would take minutes here and measure Prefect).
Per provider (bench/provider_tick.py): a tick over N in-flight runs on every provider's emulator, its backend calls
by kind (one call about many jobs: a listing or a batched describe; one about one job; other) and its wall time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import harness

ROOT = harness.ROOT


@dataclass
class Tick:
    name: str
    runs: int
    seconds: float = 0.0
    orchestration_calls: int = 0
    describe_tasks: int = 0
    backend_calls: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    rss_before_mb: float = 0.0
    report: dict = field(default_factory=dict)
    error: str = ""


def one_tick(name: str, runs: int, api_url: str, pool: str, moto: harness.Moto, *args: str) -> Tick:
    moto.app.take()
    env = {**os.environ, **moto.env(), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tick_once.py"), api_url, pool, *args],
        env=env,
        capture_output=True,
        text=True,
    )
    aws = moto.app.take()
    result = Tick(name, runs, describe_tasks=aws.get("ecs:DescribeTasks", 0))
    try:
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result.error = (out.stderr or out.stdout)[-600:]
        return result
    result.seconds = data["seconds"]
    result.orchestration_calls = data["orchestration_calls"]
    result.backend_calls = data["backend_calls"] or {}
    result.peak_rss_mb, result.rss_before_mb = data["peak_rss_mb"], data["rss_before_mb"]
    result.report = data["report"]
    return result


def copy_runs(
    pg: harness.Postgres,
    run_id: str,
    new_ids: list[str] | int,
    run_values: dict[str, str] | None = None,
    state_values: dict[str, str] | None = None,
) -> None:
    """Copies of flow run ``run_id`` and its current state under ``new_ids``, in one transaction (SQL expressions
    in ``run_values``/``state_values`` replace columns; ``ids.g`` is the copy's 1-based number). An int for
    ``new_ids`` makes that many copies with ids of PostgreSQL's choosing."""
    state_id = pg.psql(f"SELECT state_id FROM flow_run WHERE id = '{run_id}'").strip()

    def columns(table: str) -> list[str]:
        sql = (
            f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
        )
        return pg.psql(sql).split()

    run_cols, state_cols = columns("flow_run"), columns("flow_run_state")
    runs = {"id": "ids.run_id", "state_id": "NULL", **(run_values or {})}
    states = {"id": "ids.state_id", "flow_run_id": "ids.run_id", **(state_values or {})}
    run_select = ", ".join(runs.get(c, f"t.{c}") for c in run_cols)
    state_select = ", ".join(states.get(c, f"s.{c}") for c in state_cols)
    if isinstance(new_ids, int):
        source = f"SELECT gen_random_uuid() AS run_id, g FROM generate_series(1, {new_ids}) AS g"
    else:  # psql -c takes up to 128 KB: a few thousand ids
        array = ",".join(repr(i) for i in new_ids)
        source = f"SELECT * FROM unnest(ARRAY[{array}]::uuid[]) WITH ORDINALITY AS u(run_id, g)"
    sql = f"""
    BEGIN;
    CREATE TEMP TABLE ids AS SELECT run_id, gen_random_uuid() AS state_id, g FROM ({source}) AS src;
    INSERT INTO flow_run ({", ".join(run_cols)}) SELECT {run_select} FROM flow_run t, ids WHERE t.id = '{run_id}';
    INSERT INTO flow_run_state ({", ".join(state_cols)}) SELECT {state_select}
      FROM flow_run_state s, ids WHERE s.id = '{state_id}';
    UPDATE flow_run f SET state_id = ids.state_id FROM ids WHERE f.id = ids.run_id;
    COMMIT;
    """
    pg.psql(sql)


def seed_running_runs(api: harness.Api, pg: harness.Postgres, pool: str, template_net: harness.Network, n: int):
    """``n`` Running runs in ``pool`` (a real one made through the API, copied in SQL); returns their job ids."""
    api.call(
        "POST",
        "/work_pools/",
        json={"name": pool, "type": "ecs:push", "base_job_template": harness.pushpool_template(template_net)},
    )
    run_id, _ = api.create_run(api.deployment(pool, pool))
    for state in ("PENDING", "RUNNING"):
        api.call("POST", f"/flow_runs/{run_id}/set_state", json={"state": {"type": state}, "force": True})
    api.call("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": "fake-0"})
    copy_runs(
        pg,
        run_id,
        n,
        run_values={"name": "'scale-' || ids.g", "infrastructure_pid": "'fake-' || ids.g"},
    )
    ids = ["fake-0", *(f"fake-{g}" for g in range(1, n + 1))]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(ids))
    return fh.name


# -- per provider: one tick over N in-flight runs on each provider's emulator (bench/provider_tick.py) ----------------

PROVIDERS = ("process", "ecs", "cloudrun", "aci", "modal", "coiled")


@dataclass
class ProviderTick:
    provider: str
    runs: int
    in_flight: int = 0
    submit_seconds: float = 0.0
    ticks: list = field(default_factory=list)  # [{"seconds", "calls": {"list", "job", "other", "by_call"}, "report"}]
    error: str = ""


def providers_python() -> str:
    """The interpreter of the per-provider ticks: one with every provider's SDK (``make bench`` passes the test
    environment's, ``PUSHPOOL_BENCH_PROVIDERS_PYTHON``; .venv-bench has the AWS SDK only)."""
    return os.environ.get("PUSHPOOL_BENCH_PROVIDERS_PYTHON") or sys.executable


def provider_tick(provider: str, runs: int, timeout: float = 1200.0) -> ProviderTick:
    result = ProviderTick(provider, runs)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODAL_", "DASK_COILED__"))}
    env["PYTHONPATH"] = str(ROOT)
    try:
        out = subprocess.run(
            [providers_python(), str(ROOT / "bench" / "provider_tick.py"), provider, str(runs)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        result.error = f"no answer within {timeout:.0f} s"
        return result
    try:
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        result.error = (out.stderr or out.stdout)[-600:]
        return result
    result.in_flight, result.submit_seconds, result.ticks = data["in_flight"], data["submit_seconds"], data["ticks"]
    return result


def provider_lines(rows: list[ProviderTick]) -> list[str]:
    """The report's per-provider table: each tick's backend calls by kind and its wall time, side by side."""

    def calls(tick: dict) -> str:
        c = tick["calls"]
        return f"{c['list']} / {c['job']} / {c['other']}"

    def detail(tick: dict) -> str:
        return ", ".join(f"`{k}` {v}" for k, v in sorted(tick["calls"]["by_call"].items(), key=lambda kv: -kv[1])[:4])

    lines = [
        "| provider | in-flight runs | tick 1 (fresh process): time | list / per-job / other calls | tick 2 (warm): "
        "time | list / per-job / other calls | tick 1's calls | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error or len(r.ticks) < 2:
            lines.append(f"| {r.provider} | {r.runs} | – | – | – | – | – | {r.error[-200:].replace(chr(10), ' ')} |")
            continue
        first, warm = r.ticks
        outcome = json.dumps(first["report"].get("reconciled", {}))
        if first["report"].get("errors"):
            outcome += " errors: " + "; ".join(first["report"]["errors"])[:200]
        lines.append(
            f"| {r.provider} | {r.in_flight} | {first['seconds'] * 1000:.0f} ms | {calls(first)} "
            f"| {warm['seconds'] * 1000:.0f} ms | {calls(warm)} | {detail(first)} | {outcome} |"
        )
    return lines
