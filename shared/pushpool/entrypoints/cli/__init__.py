"""The ``pushpool`` command: ``serve``, ``work-pool create | ls | inspect | delete | provision-infra | deprovision``,
``status``, ``logs <flow-run>``, ``usage``, ``monitor`` and ``doctor``, on typer with rich output, like Prefect's own
CLI (the same verbs, tables, ``--output json``). Each command calls one use-case; pushpool's errors become one
``pushpool: error:`` line. One module per command group: ``serve.py``, ``pools.py``, ``runs.py``, ``doctor.py``.

``work-pool create`` points the pool's webhook at the ``pushpool serve`` that runs under ``PUSHPOOL_HOME`` (serve
records its address there): :func:`submit_url_for`.

typer and rich come with the ``cli`` extra (``pip install 'pushpool[cli]'``), never with the core package: nothing else
in ``pushpool`` imports them, and the Lambda functions never import this module. Without the extra, :func:`main` says
how to install it. The use-cases (and rich's heavier modules) are imported inside the commands, so the command starts
fast.

On a terminal the provisioning commands show a spinner while they read the cloud, the plan in a panel, a real [y/n]
question, and a progress bar that moves step by step; ``status`` prints a table. When stdout is not a terminal the
output is plain text instead (the boxed plan, one line per step, fixed columns), which scripts and tests parse. The
question is skipped with ``--yes``, or when stdin is not a terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

from pushpool.entrypoints.cli.base import _MISSING_EXTRA
from pushpool.entrypoints.cli.output import _error
from pushpool.errors import PushpoolError

if _MISSING_EXTRA is None:  # the `cli` extra: typer reads the commands' annotations when it builds the app
    import typer


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"pushpool {version('pushpool')}")
        raise typer.Exit()


def cmd_root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    show_version: Annotated[
        bool,
        typer.Option("--version", help="print pushpool's version and exit", callback=_show_version, is_eager=True),
    ] = False,
) -> None:
    """Push work pools for any Prefect server."""
    _configure_logging(verbose)


# --- the application -------------------------------------------------------------------------------------------------


class _CurrentStderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record is emitted, so that log lines go above a live progress bar or
    spinner (rich redirects ``sys.stderr`` while it draws)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _configure_logging(verbose: bool) -> None:
    from pushpool.usecases.run_events import RunFieldsFormatter, install_log_fields

    handler = _CurrentStderr()
    # A line about a run ends with its run, pool and job: [run=… pool=… job=…].
    handler.setFormatter(RunFieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install_log_fields(handler)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("httpx", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_app() -> typer.Typer:
    """The typer application (requires the ``cli`` extra)."""
    from pushpool.entrypoints.cli.base import _Command, _Group
    from pushpool.entrypoints.cli.doctor import cmd_doctor
    from pushpool.entrypoints.cli.pools import (
        cmd_deprovision,
        cmd_pool_create,
        cmd_pool_delete,
        cmd_pool_inspect,
        cmd_pool_ls,
        cmd_provision_infra,
    )
    from pushpool.entrypoints.cli.runs import cmd_logs, cmd_monitor, cmd_status, cmd_usage
    from pushpool.entrypoints.cli.serve import cmd_serve

    settings: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
    app = typer.Typer(
        name="pushpool",
        help="Push work pools for any Prefect server.",
        add_completion=False,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings=settings,
        cls=_Group,
    )
    app.callback()(cmd_root)
    # serve's help is its docstring: the submit path, the token file, PUSHPOOL_HOME
    app.command("serve", cls=_Command)(cmd_serve)

    pools = typer.Typer(help="Manage push work pools.", rich_markup_mode="rich", cls=_Group)
    pools.command("create", cls=_Command, help="Create or update a push pool, its Webhook block and automation.")(
        cmd_pool_create
    )
    pools.command("provision-infra", cls=_Command, help="Create the cloud resources of an existing push pool.")(
        cmd_provision_infra
    )
    pools.command("deprovision", cls=_Command, help="Remove the cloud resources created for a pool (by tag).")(
        cmd_deprovision
    )
    pools.command("delete", cls=_Command, help="Delete a push pool and everything pushpool made for it.")(
        cmd_pool_delete
    )
    pools.command("ls", cls=_Command, help="List push pools (and what deleted ones left behind).")(cmd_pool_ls)
    pools.command("inspect", cls=_Command, help="Show a push pool, its Webhook block and its automation.")(
        cmd_pool_inspect
    )
    app.add_typer(pools, name="work-pool")

    app.command("status", cls=_Command, help="In-flight runs of push pools with their jobs and ages.")(cmd_status)
    app.command("monitor", cls=_Command, help="Run one monitor tick and print its report.")(cmd_monitor)
    app.command(
        "usage",
        cls=_Command,
        help="Managed execution (prefect:managed pools): compute hours, runs in flight and pools against the limits "
        "this pushpool is set to (PUSHPOOL_MANAGED_TIER, PUSHPOOL_MANAGED_TIERS).",
    )(cmd_usage)
    app.command("logs", cls=_Command, help="A flow run's state history, its job's output and its logs.")(cmd_logs)
    app.command(
        "doctor",
        cls=_Command,
        help="Check Prefect, the scheduler, serve, the token, the pools and the providers, and say what to do; "
        "--canary POOL runs a tiny flow through POOL and times each stage.",
    )(cmd_doctor)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the ``pushpool`` command and return its exit code (never calls ``sys.exit``).

    Usage errors exit 2 with typer's message; a :class:`PushpoolError` prints ``pushpool: error: <one line>`` on
    stderr and exits 2, without a traceback.
    """
    if _MISSING_EXTRA is not None:
        print(
            f"pushpool: error: the command line needs the cli extra ({_MISSING_EXTRA}): pip install 'pushpool[cli]'",
            file=sys.stderr,
        )
        return 2
    command = typer.main.get_command(build_app())
    try:
        command.main(args=argv, prog_name="pushpool", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except PushpoolError as exc:
        _error(exc.one_line())
        return 2
    return 0
