"""``pushpool status | logs | usage | monitor``: runs in flight, one run's story, managed usage, one tick."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pushpool.entrypoints.cli.base import JsonOption, OutputOption, _deps, local_settings
from pushpool.entrypoints.cli.output import _console, _output_json, _say, _tty

if TYPE_CHECKING:
    from rich.console import RenderableType


def cmd_status(
    pool: Annotated[str | None, typer.Option(help="only this pool's runs")] = None,
    output: OutputOption = None,
    as_json: JsonOption = False,
) -> None:
    """In-flight runs of push pools with their jobs and ages."""
    from pushpool.usecases.pools import runs_in_flight

    as_json = _output_json(output, as_json)
    deps = _deps(local_settings())
    rows = runs_in_flight(deps, pool)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        _say("no runs in flight")
    elif _tty():
        _console().print(_status_table(rows))
    else:
        print(f"{'RUN':<36}  {'NAME':<24} {'POOL':<18} {'STATE':<22} {'AGE':>8}  {'JOB':<10} JOB ID")
        for r in rows:
            print(
                f"{r['run_id']:<36}  {r['name'][:24]:<24} {r['pool'][:18]:<18} {r['state'][:22]:<22} "
                f"{_age(r['age_seconds']):>8}  {r['job_state']:<10} {r['job_id'] or '-'}"
            )


def cmd_logs(
    flow_run: Annotated[str, typer.Argument(help="the flow run's id or name")],
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="last lines of the job's output and of the run's logs")
    ] = 200,
    output: OutputOption = None,
) -> None:
    """A flow run's state history (pushpool's decisions, with their messages), its job's output and its logs."""
    from pushpool.usecases.run_logs import run_logs

    as_json = _output_json(output)
    found = run_logs(_deps(local_settings()), flow_run, lines=lines)
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    _say(
        f"Flow run {found['name']} ({found['id']}) — pool {found['pool'] or '-'}, state {found['state']}", style="bold"
    )
    job = found["job_id"]
    backend = found.get("job_backend")
    _say(f"Job: {job} ({backend} backend)" if job and backend else f"Job: {job or 'none started'}")
    _say("State history:", style="bold")
    for state in found["states"]:
        message = f"  {state['message']}" if state["message"] else ""
        _say(f"  {str(state['timestamp'])[:23]:<23}  {state['type']:<10} {state['name']:<22}{message}".rstrip())
    _say("Job output:", style="bold")
    for line in found["job_output"]:
        _say(f"  {line}")
    if found["job_note"]:
        _say(f"  note: {found['job_note']}", style="dim")  # not in parentheses: the note may hold some
    _say("Logs:", style="bold")
    for record in found["logs"]:
        level = logging.getLevelName(record["level"]) if isinstance(record["level"], int) else record["level"]
        _say(f"  {str(record['timestamp'])[:23]:<23}  {level:<8} {record['name']}: {record['message']}")
    if not found["logs"]:
        _say("  (none)", style="dim")


def _status_table(rows: list[dict[str, Any]]) -> RenderableType:
    from rich.table import Table

    table = Table(title="Runs in flight")
    table.add_column("Run", style="cyan", no_wrap=True)
    table.add_column("Name", style="green")
    table.add_column("Pool", style="blue")
    table.add_column("State")
    table.add_column("Age", justify="right")
    table.add_column("Job")
    table.add_column("Job ID", style="dim", overflow="fold")
    for r in rows:
        table.add_row(
            str(r["run_id"]),
            r["name"],
            r["pool"],
            r["state"],
            _age(r["age_seconds"]),
            str(r["job_state"]),
            r["job_id"] or "-",
        )
    return table


def _age(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(seconds)))


def cmd_usage(output: OutputOption = None) -> None:
    """Managed execution (prefect:managed pools): compute hours used and left this month (UTC), runs in flight and
    managed pools, against the limits of the workspace's tier — this pushpool's own settings (PUSHPOOL_MANAGED_TIER,
    PUSHPOOL_MANAGED_TIERS), set by whoever runs it."""
    from pushpool.usecases.usage import usage

    as_json = _output_json(output)
    found = usage(_deps(local_settings()), addresses=True)
    if as_json:
        print(json.dumps(found.as_dict(), indent=2))
    else:
        _say(found.summary())


def cmd_monitor() -> None:
    """Run one monitor tick and print its report."""
    from pushpool.usecases.monitor import tick

    deps = _deps(local_settings())
    print(json.dumps(tick(deps).as_dict(), indent=2))
