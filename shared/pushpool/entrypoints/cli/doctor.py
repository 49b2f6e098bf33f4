"""``pushpool doctor [--pool NAME …] [--canary POOL]``: the checks of ``usecases/doctor.py`` and the canary of
``usecases/canary.py``, printed one line each (what was checked, what was seen, and under a failure what to do), or
as JSON with ``-o json``. Exits 1 when a check fails or the canary does not complete, 0 otherwise (warnings included),
2 on a usage error.

The Prefect client here gives up after one retry (a doctor that says "unreachable" after a minute of backoff helps no
one); nothing is created or changed, except by ``--canary`` (a deployment, deleted at the end, and its one run).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from pushpool.settings import Settings
    from pushpool.usecases.canary import CanaryResult, Stage
    from pushpool.usecases.doctor import Diagnosis, Finding

_MARK = {"ok": ("OK", "green"), "warn": ("WARN", "yellow"), "fail": ("FAIL", "red")}


def cmd_doctor(
    pool: Annotated[
        list[str] | None,
        typer.Option("--pool", metavar="NAME", help="check only this pool (repeat for more; default: every push pool)"),
    ] = None,
    canary: Annotated[
        str | None,
        typer.Option(
            "--canary",
            metavar="POOL",
            help="also deploy and run a tiny flow through POOL end to end (on its real provider) and time each stage",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds the canary's run may take to complete")] = 600.0,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", metavar="FORMAT", help="output format; currently supports: json", show_default=False
        ),
    ] = None,
) -> None:
    """Check what a new setup gets wrong, and say what to do: Prefect reachable and its version, known-bad pins, the
    scheduler, serve, each push pool's Webhook block, automation, reachability and token, each provider's SDK and
    credentials. With --canary POOL, also run a tiny flow through POOL and print each stage with its time."""
    from pushpool.entrypoints.cli.output import _output_json

    as_json = _output_json(output)
    pools = list(dict.fromkeys([*(pool or []), *([canary] if canary else [])])) or None
    diagnosis, deps = _diagnose(pools)
    if not as_json:
        for finding in diagnosis.findings:
            _print_finding(finding)
    result = None
    if canary is not None and deps is not None:
        if not diagnosis.ok and not as_json:
            _line("The canary runs all the same: it shows where the run stops.", "yellow")
        result = _canary(deps, canary, timeout, quiet=as_json)
    if deps is not None:
        deps.orchestrator.close()
    if as_json:
        found = diagnosis.as_dict()
        if canary is not None:
            found["canary"] = result.as_dict() if result is not None else None
        print(json.dumps(found, indent=2))
    ok = diagnosis.ok and (canary is None or (result is not None and result.ok))
    if not as_json:
        _line("All checks passed." if ok else "Some checks failed: see FAIL above.", "green" if ok else "red")
    if not ok:
        raise typer.Exit(1)


def _diagnose(pools: list[str] | None) -> tuple[Diagnosis, Any]:
    from pushpool.entrypoints.serve import running_serves
    from pushpool.errors import ConfigurationError
    from pushpool.prefect_api.client import PrefectClient
    from pushpool.settings import Settings
    from pushpool.usecases.deps import Deps
    from pushpool.usecases.doctor import FAIL, Diagnosis, ServeInfo, diagnose

    try:
        settings: Settings = Settings.from_env()
        deps = Deps.from_settings(settings)
    except ConfigurationError as exc:
        found = Diagnosis()
        found.add("settings", FAIL, exc.one_line(), "fix the variable it names (see `pushpool serve --help`)")
        return found, None
    deps.orchestrator.close()
    deps.orchestrator = PrefectClient(
        settings.prefect_api_url,
        api_key=settings.prefect_api_key,
        auth_string=settings.prefect_api_auth_string,
        timeout=10.0,
        max_retries=1,
    )
    serves = [
        ServeInfo(s.pid, s.address, s.event_stream) for s in running_serves(settings.home, settings.prefect_api_url)
    ]
    return diagnose(deps, pools=pools, serves=serves), deps


def _canary(deps: Any, pool: str, timeout: float, *, quiet: bool) -> CanaryResult | None:
    from pushpool.errors import PushpoolError
    from pushpool.prefect_api.client import PrefectClient
    from pushpool.usecases.canary import CanaryResult, run_canary

    settings = deps.settings
    deps.orchestrator.close()  # the checks' client gives up fast; a run of minutes rides out a busy server's 503s
    deps.orchestrator = PrefectClient(
        settings.prefect_api_url, api_key=settings.prefect_api_key, auth_string=settings.prefect_api_auth_string
    )
    if not quiet:
        _line(f"Canary: a run of pushpool-canary/canary-{pool} through pool {pool}", "bold")
    try:
        result = run_canary(deps, pool, timeout=timeout, report=None if quiet else _print_stage)
    except PushpoolError as exc:
        result = CanaryResult(pool, problem=exc.one_line(), fix="make the pool one this pushpool serves")
    if not quiet:
        if result.run_id:
            _line(f"  flow run {result.run_id}")
        if result.ok:
            _line(f"Canary completed in {result.seconds('Completed')} s.", "green")
        else:
            _line(f"FAIL  canary: {result.problem}", "red")
            if result.fix:
                _line(f"      → {result.fix}")
    return result


def _print_stage(stage: Stage, result: CanaryResult) -> None:
    seconds = result.seconds(stage.name)
    earlier = [
        result.seconds(s.name)
        for s in result.stages[: result.stages.index(stage)]
        if result.seconds(s.name) is not None
    ]
    delta = f"(+{seconds - earlier[-1]:.3f})" if seconds is not None and earlier else ""
    shown = f"{seconds:>9.3f} s" if seconds is not None else f"{'-':>11}"
    note = f"  {stage.note}" if stage.note else ""
    _line(f"  {stage.name:<18} {shown} {delta:>10}{note}".rstrip())


def _print_finding(finding: Finding) -> None:
    label, style = _MARK.get(finding.status, (finding.status.upper(), None))
    _line(f"{label:<5} {finding.check}: {finding.detail}", style)
    if finding.fix and finding.status != "ok":
        _line(f"      → {finding.fix}")


def _line(text: str, style: str | None = None) -> None:
    from pushpool.entrypoints.cli.output import _say

    _say(text, style=style)
