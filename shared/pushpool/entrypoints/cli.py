"""The ``pushpool`` command: ``serve``, ``work-pool create | ls | inspect | delete | provision-infra | deprovision``,
``status``, ``logs <flow-run>``, ``usage``, ``monitor`` and ``doctor`` (entrypoints/doctor.py), on typer with rich
output, like Prefect's own CLI (the same verbs, tables, ``--output json``). Each command calls one use-case;
pushpool's errors become one ``pushpool: error:`` line.

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

import datetime as dt
import enum
import json
import logging
import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pushpool.errors import ConfigurationError, InvalidRequestError, OrchestratorError, PushpoolError
from pushpool.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from pushpool.providers.provisioning import Step


class Events(str, enum.Enum):
    webhook = "webhook"
    stream = "stream"


class Credentials(str, enum.Enum):
    role = "role"
    access_key = "access-key"
    key = "key"


try:  # the `cli` extra
    import rich  # noqa: F401  (only checked here: its modules are imported where they are used)
    import typer
except ModuleNotFoundError as exc:
    _MISSING_EXTRA: ModuleNotFoundError | None = exc
else:
    _MISSING_EXTRA = None
    # Options several commands share (with the same default everywhere).
    PortOption = Annotated[
        int | None,
        typer.Option(
            help="port of the local `pushpool serve` the webhook should call (checked against the running serve)",
            show_default="the running serve's, else PUSHPOOL_PORT, else 4280",
        ),
    ]
    SubmitUrlOption = Annotated[str | None, typer.Option(help="where Prefect should call submit")]
    # Prefect's convention: `-o/--output json` on every command that prints a result. `--json` is kept, hidden, on
    # the commands that had it (scripts may use it): the same as `--output json`.
    JsonOption = Annotated[bool, typer.Option("--json", hidden=True, help="the same as --output json")]
    OutputOption = Annotated[
        str | None,
        typer.Option(
            "--output", "-o", metavar="FORMAT", help="output format; currently supports: json", show_default=False
        ),
    ]
    YesOption = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
    RegionOption = Annotated[str | None, typer.Option(help="cloud region (default: the SDK's own configuration)")]
    CredentialsOption = Annotated[
        Credentials,
        typer.Option(
            help="role: the deployed functions use their own IAM role (default); access-key: create an IAM user and "
            "store one access key in an aws-credentials block (ecs:push); key: store one service-account key in a "
            "gcp-credentials block (cloud-run pools)",
        ),
    ]
    # Deleting finds what pushpool made by its tags (an IAM user or a credentials block included): the mode a pool was
    # made with does not matter there. Still accepted (hidden), as scripts may pass it.
    DeleteCredentialsOption = Annotated[
        Credentials, typer.Option("--credentials", hidden=True, help="ignored: deletion finds what pushpool made")
    ]
    StaticIpsOption = Annotated[
        bool,
        typer.Option(
            "--static-ips",
            help="ECS: run tasks in private subnets behind a NAT gateway with an Elastic IP (a static outbound "
            "address: the pool managed runs use)",
        ),
    ]
    AllowedIdentityOption = Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-identity",
            help="ACI: a user-assigned identity (ARM resource id) the pool's jobs may have; repeat for more. Only "
            "these (and, with --provision-infra, the pool's own) may be named by `identities` or "
            "`image_registry.identity`; without any, no job may have an identity",
        ),
    ]
    ProjectOption = Annotated[
        str | None,
        typer.Option(
            help="Google Cloud project (cloud-run pools)",
            show_default="GOOGLE_CLOUD_PROJECT / CLOUDSDK_CORE_PROJECT, else the credentials' project",
        ),
    ]


def _reflow(text: str) -> str:
    """A docstring's paragraphs each on one line: rich help keeps a paragraph's line breaks (``serve --help`` broke
    its lines mid-sentence where the source did), and wraps the lines to the terminal itself."""
    import inspect

    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


if _MISSING_EXTRA is None:
    import click
    from typer.core import TyperArgument, TyperCommand, TyperGroup

    def _usage_name(param: Any) -> str:
        """An argument as Prefect's CLI shows it in a usage line: ``NAME``, ``[NAME]`` when optional."""
        name = (param.metavar or param.name or "").upper() + ("..." if param.nargs != 1 else "")
        return name if param.required else f"[{name}]"

    class _HelpConventions:
        """Help as Prefect's CLI shows it: flags without a value placeholder (typer shows ``--dry-run <bool>``),
        arguments in usage lines as ``NAME`` (typer shows ``{name}``)."""

        def get_params(self, ctx: click.Context) -> list[Any]:
            params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
            for param in params:
                if getattr(param, "is_flag", False) and param.metavar is None:
                    param.metavar = ""  # a flag takes no value: nothing after its name in help
            return params

        def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
            pieces: list[str] = [self.options_metavar] if self.options_metavar else []  # type: ignore[attr-defined]
            for param in self.get_params(ctx):
                if isinstance(param, (TyperArgument, click.Argument)):
                    pieces.append(_usage_name(param))
            return pieces

    class _Command(_HelpConventions, TyperCommand):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.help:
                self.help = _reflow(self.help)

    class _Group(_HelpConventions, TyperGroup):
        def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
            return [*super().collect_usage_pieces(ctx), self.subcommand_metavar]


WEBHOOK_TOKEN_FILE = "webhook-token"  # submit's token: provision writes it to the pool's Webhook block in Prefect
ADMIN_TOKEN_FILE = "admin-token"  # serve's /provision and /monitor: never written anywhere else


def local_token(home: Path, name: str = WEBHOOK_TOKEN_FILE) -> str:
    """A token of this machine's ``pushpool serve`` kept in ``<home>/<name>``, created (mode 0600) on first use."""
    path = home / name
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


SERVE_HEARTBEAT_SECONDS = 30.0  # Prefect's worker heartbeats every 30 s (PREFECT_WORKER_HEARTBEAT_SECONDS)


def local_settings(port: int | None = None) -> Settings:
    """Settings from the environment, completed with local defaults (token file, port, job directory)."""
    settings = Settings.from_env()
    changes: dict[str, object] = {"port": port or settings.port}
    if not settings.webhook_tokens:
        changes["webhook_tokens"] = (local_token(settings.home),)
    if settings.process_dir is None:
        changes["process_dir"] = settings.home / "jobs"
    return settings.replace(**changes)


def submit_url_for(settings: Settings, *, submit_url: str | None, port: int | None) -> str:
    """Where the pool's webhook should call submit: ``--submit-url``, else ``PUSHPOOL_SUBMIT_URL``, else the
    ``pushpool serve`` running under ``PUSHPOOL_HOME`` for this Prefect API (the one on ``--port`` when given).

    With no serve running, the local default (``--port``, ``PUSHPOOL_PORT`` or 4280) is used and a warning says so.

    Raises:
        ConfigurationError: ``--port`` is not where the running serve listens, or several serves run and no
            ``--port`` says which (nothing changed).
    """
    return submit_target(settings, submit_url=submit_url, port=port, events=None)[0]


def submit_target(
    settings: Settings, *, submit_url: str | None, port: int | None, events: str | None
) -> tuple[str, str]:
    """The submit URL (:func:`submit_url_for`) and how the pool's events reach pushpool: ``events`` when given; else
    ``stream`` when the URL is a running serve's that reads Prefect's event stream (its automation is then kept
    disabled: see ``usecases/provision.py``), else ``webhook``."""
    from pushpool.entrypoints.serve import SUBMIT_PATH, running_serves

    if submit_url:
        return submit_url, events or "webhook"
    if settings.submit_url:
        return settings.submit_url, events or "webhook"
    serves = running_serves(settings.home, settings.prefect_api_url)
    if port is not None:
        serves = [s for s in serves if s.port == port] or serves
        if serves and serves[0].port != port:
            ports = ", ".join(str(s.port) for s in serves)
            raise ConfigurationError(
                f"pushpool serve (pid {serves[0].pid}) listens on port {ports}, not {port}: leave out --port to use "
                "it, or give --submit-url"
            )
    if len(serves) > 1:
        ports = ", ".join(str(s.port) for s in serves)
        raise ConfigurationError(
            f"several pushpool serve processes run under {settings.home} (ports {ports}): choose one with --port"
        )
    if serves:
        return serves[0].submit_url, events or ("stream" if serves[0].event_stream else "webhook")
    url = f"http://127.0.0.1:{port or settings.port}{SUBMIT_PATH}"
    _warn(
        f"no pushpool serve is running under {settings.home} for {settings.prefect_api_url}: the webhook will call "
        f"{url} — start `pushpool serve --port {port or settings.port}` (or give --submit-url)"
    )
    return url, events or "webhook"


def _deps(settings: Settings):
    from pushpool.usecases.deps import Deps

    deps = Deps.from_settings(settings)
    try:
        deps.orchestrator.check()
    except OrchestratorError as exc:
        raise ConfigurationError(f"cannot use the Prefect API at {settings.prefect_api_url}: {exc.one_line()}") from exc
    return deps


# --- output ----------------------------------------------------------------------------------------------------------


def _tty() -> bool:
    """Whether stdout is a terminal: rich output there, plain text otherwise."""
    return sys.stdout.isatty()


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _say(text: str, style: str | None = None) -> None:
    """A message on stdout: styled on a terminal (never re-wrapped, no markup), verbatim otherwise."""
    if _tty():
        _console().print(text, style=style, markup=False, soft_wrap=True)
    else:
        print(text, flush=True)


def _error(message: str) -> None:
    line = f"pushpool: error: {message}"
    if sys.stderr.isatty():
        _console(stderr=True).print(line, style="red", markup=False, soft_wrap=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _output_json(output: str | None, as_json: bool = False) -> bool:
    """Whether ``--output``/``--json`` ask for JSON (Prefect's ``--output json``; ``--json`` is kept as its alias)."""
    if output is not None and output.lower() != "json":
        raise typer.BadParameter("only 'json' output format is supported", param_hint="'--output'")
    return as_json or output is not None


def _warn(message: str) -> None:
    line = f"pushpool: warning: {message}"
    if sys.stderr.isatty():
        _console(stderr=True).print(line, style="yellow", markup=False, soft_wrap=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


_PLAN_STYLES = (("create", "green"), ("update", "yellow"), ("already exists:", "dim"), ("delete", "red"))


def _plan_panel(plan: str) -> RenderableType:
    """The plan (the text box of ``render_plan``) in a rich panel, each action coloured."""
    from rich.panel import Panel
    from rich.text import Text

    lines = plan.splitlines()
    if len(lines) > 2 and all(line.startswith("| ") and line.endswith(" |") for line in lines[1:-1]):
        lines = [line[2:-2].rstrip() for line in lines[1:-1]]
    text = Text()
    for i, line in enumerate(lines):
        action = line.lstrip(" -")
        style = "bold" if i == 0 else next((s for verb, s in _PLAN_STYLES if action.startswith(verb)), None)
        text.append(line + ("\n" if i < len(lines) - 1 else ""), style=style)
    return Panel(text, expand=False)


def _ask(question: str, console: Console) -> bool:
    """A real [y/n] question: asked again until the answer is y, yes, n or no."""
    from rich.prompt import Confirm

    class YesNo(Confirm):
        def process_response(self, value: str) -> bool:
            answer = value.strip().lower()
            return super().process_response({"yes": "y", "no": "n"}.get(answer, answer))

    return YesNo.ask(question, console=console)


class _InfraSession:
    """The terminal side of provision-infra and deprovision, around the use-case call.

    A spinner while the cloud is read; then ``confirm`` (the use-case's callback) shows the plan and asks; then
    ``progress`` is called before each step is applied: a rich progress bar with one line per step above it on a
    terminal, one plain line per step otherwise, and a final 100% line once everything succeeded.
    """

    VERBS = {"create": "Provisioning", "update": "Updating", "exists": "Already exists:", "delete": "Removing"}
    STYLES = {"create": "green", "update": "yellow", "exists": "dim", "delete": "red"}

    def __init__(self, question: str, *, reading: str, yes: bool, label: str = "Infrastructure") -> None:
        self.question, self.reading, self.yes, self.label = question, reading, yes, label
        self.console = _console() if _tty() else None
        self._status: Any = None
        self._bar: Any = None
        self._task: Any = None
        self._total = 0

    def __enter__(self) -> _InfraSession:
        if self.console is not None:
            self._status = self.console.status(self.reading)
            self._status.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._stop_status()
        if self._bar is not None:
            if exc_type is None:
                self._bar.update(self._task, completed=self._total, description=self.label)
            self._bar.stop()
        elif exc_type is None and self._total:
            print(f"{self.label} " + "━" * 40 + " 100%", flush=True)

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def confirm(self, plan: str) -> bool:
        self._stop_status()
        if self.console is None:
            print(plan, flush=True)
        else:
            self.console.print(_plan_panel(plan))
        if self.yes or not sys.stdin.isatty():
            return True
        return _ask(self.question, self.console or _console())

    def progress(self, index: int, total: int, step: Step) -> None:
        verb = self.VERBS.get(step.action, step.action)
        line = f"[{index}/{total}] {verb} {step.resource} {step.name}"
        self._total = total
        if self.console is None:
            print(line, flush=True)
            return
        if self._bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._stop_status()
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task(self.label, total=total)
            self._bar.start()
        self._bar.update(self._task, completed=index - 1, description=f"{verb} {step.resource}", refresh=True)
        self._bar.console.print(line, style=self.STYLES.get(step.action), markup=False, soft_wrap=True)


# --- commands --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfraOptions:
    """What the provisioning commands share; ``_provisioner`` reads ``region`` and ``credentials``."""

    yes: bool = False
    region: str | None = None
    credentials: str = Credentials.role.value
    json: bool = False
    project: str | None = None
    static_ips: bool = False


def _provisioner(options: InfraOptions, type_name: str):
    from pushpool.providers import provider_for_pool_type

    provider = provider_for_pool_type(type_name)
    if options.static_ips:  # providers/ecs/managed_network.py
        if provider.name != "ecs":
            raise InvalidRequestError(f"--static-ips is for ecs:push pools, not {type_name}")
        return provider.create_provisioner(region=options.region, credentials=options.credentials, static_ips=True)
    if options.project is None:
        return provider.create_provisioner(region=options.region, credentials=options.credentials)
    if provider.name != "cloudrun":
        raise InvalidRequestError(f"--project is for cloud-run pools, not {type_name}")
    return provider.create_provisioner(region=options.region, credentials=options.credentials, project=options.project)


def _print_infra(result: Any, options: InfraOptions) -> None:
    if options.json:
        print(json.dumps(result.as_dict(), indent=2))
        return
    outcome = result.outcome
    if outcome is not None:
        if outcome.created or outcome.changed:
            _say("Infrastructure successfully provisioned!", style="green")
        else:
            _say("Nothing to do.")
    if result.prefect is not None:
        _say(result.prefect.summary())
    for note in result.notes:
        _say(note, style="yellow" if note.startswith(("cancelled", "verify")) else None)


def _provision_infra(
    name: str,
    *,
    type_name: str | None,
    submit_url: str | None,
    port: int | None,
    options: InfraOptions,
    concurrency_limit: int | None = None,
    plan_only: bool = False,
    settings_of_pool: dict | None = None,
) -> int:
    from pushpool.usecases.provision_infra import provision_infra

    settings = local_settings(port)
    deps = _deps(settings)
    type_name = type_name or deps.orchestrator.read_work_pool(name).type
    session = _InfraSession(
        "Proceed with infrastructure provisioning?",
        reading="Checking the cloud account for the infrastructure the pool needs…",
        yes=options.yes,
    )
    with session:
        result = provision_infra(
            deps,
            _provisioner(options, type_name),
            pool=name,
            type_name=type_name,
            submit_url=lambda: submit_url_for(settings, submit_url=submit_url, port=port),
            concurrency_limit=concurrency_limit,
            confirm=session.confirm,
            progress=session.progress,
            plan_only=plan_only,
            settings=settings_of_pool,
        )
    _print_infra(result, options)
    if plan_only:
        from pushpool.providers.provisioning import render_plan

        _say(render_plan(f"Plan for work pool {name} (--dry-run: nothing was changed):", result.plan))
        return 0
    return 0 if result.applied else 1


def _allowed_identities(pool_type: str, identities: list[str] | None) -> dict | None:
    """The operator's identity allowlist of an ACI pool (stored as a literal of its job configuration), checked here:
    a malformed id or another pool type is refused before anything changes."""
    if not identities:
        return None
    from pushpool.providers import provider_for_pool_type

    if provider_for_pool_type(pool_type).name != "aci":
        raise InvalidRequestError(f"--allowed-identity is for azure-container-instance:push pools, not {pool_type}")
    from pushpool.providers.aci.config import identity_key

    for identity in identities:
        if identity_key(identity) is None:
            raise InvalidRequestError(
                f"--allowed-identity {identity!r} is not a user-assigned identity's resource id (/subscriptions/<id>/"
                "resourceGroups/<group>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>); nothing "
                "was changed"
            )
    return {"allowed_identities": list(dict.fromkeys(identities))}


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


def cmd_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="port to listen on", show_default="PUSHPOOL_PORT, else 4280")] = None,
    monitor_interval: Annotated[float, typer.Option(help="seconds between monitor ticks")] = 5.0,
    no_event_stream: Annotated[
        bool, typer.Option("--no-event-stream", help="rely on the webhook and the monitor only")
    ] = False,
) -> None:
    """Run submit, provision and the monitor against a Prefect server, in one process.

    Prefect's automations call [bold]POST http://<host>:<port>/submit[/] (the pool's Webhook block holds that URL
    and a bearer token); the monitor runs every --monitor-interval seconds; Prefect's event stream is a faster
    trigger. [bold]POST /provision[/] and [bold]POST /monitor[/] take the admin token only (Authorization: Bearer),
    never the webhook token, which Prefect's API users can read in the Webhook block. State lives in
    [bold]PUSHPOOL_HOME[/] (default ~/.pushpool): the webhook token in <home>/webhook-token and the admin token in
    <home>/admin-token (each created, mode 0600, on first use, unless PUSHPOOL_WEBHOOK_TOKEN / PUSHPOOL_ADMIN_TOKEN
    is set; the admin token is never stored in Prefect), the process jobs in <home>/jobs (PUSHPOOL_PROCESS_DIR), and
    where this serve listens in <home>/serve/, so that `pushpool work-pool create` points new pools at it. Stop it
    with Ctrl-C or SIGTERM.
    """
    from pushpool.entrypoints.serve import SUBMIT_PATH, Server, ServeRecord, record_serve, remove_record

    settings = local_settings(port)
    if not settings.admin_token:
        settings = settings.replace(admin_token=local_token(settings.home, ADMIN_TOKEN_FILE))
    if not os.environ.get("PUSHPOOL_HEARTBEAT_INTERVAL"):  # a heartbeat is a write that Prefect follows with more
        settings = settings.replace(heartbeat_interval_seconds=SERVE_HEARTBEAT_SECONDS)
    if not settings.submit_url:
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        settings = settings.replace(submit_url=f"http://{local}:{settings.port}{SUBMIT_PATH}")
    deps = _deps(settings)
    try:
        server = Server(
            deps, host=host, port=settings.port, monitor_interval=monitor_interval, event_stream=not no_event_stream
        )
    except OSError as exc:
        raise ConfigurationError(f"cannot listen on {host}:{settings.port}: {exc.strerror or exc}") from exc
    record = record_serve(
        settings.home,
        ServeRecord(
            pid=os.getpid(),
            port=settings.port,
            address=server.address,
            submit_url=settings.submit_url or "",
            prefect_api_url=settings.prefect_api_url,
            event_stream=not no_event_stream,
        ),
    )
    done = threading.Event()
    received: list[str] = []

    def stop(signum: int, _: object) -> None:
        received.append(signal.Signals(signum).name)
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log = logging.getLogger("pushpool.serve")
    try:
        server.start()
        done.wait()
        log.info("received %s: stopping", received[0] if received else "a stop request")
    finally:
        remove_record(record)
        server.stop()
    log.info("pushpool serve stopped")


def cmd_pool_create(
    name: Annotated[str, typer.Argument(help="the work pool's name")],
    pool_type: Annotated[str, typer.Option("--type", help="pool type, e.g. process:push or prefect:managed")],
    concurrency_limit: Annotated[int | None, typer.Option(help="the pool's concurrency limit")] = None,
    submit_url: SubmitUrlOption = None,
    port: PortOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would change, change nothing")] = False,
    output: OutputOption = None,
    as_json: JsonOption = False,
    with_infra: Annotated[
        bool, typer.Option("--provision-infra", help="also create the cloud resources it needs")
    ] = False,
    yes: YesOption = False,
    region: RegionOption = None,
    credentials: CredentialsOption = Credentials.role,
    events: Annotated[
        Events | None,
        typer.Option(
            "--events",
            help="how Prefect's flow-run events reach pushpool: webhook (the automation calls submit) or stream "
            "(pushpool serve reads Prefect's event stream; the automation stays disabled, sparing Prefect's "
            "database). Default: stream for a running serve that reads the stream, else webhook",
        ),
    ] = None,
    project: ProjectOption = None,
    static_ips: StaticIpsOption = False,
    allowed_identity: AllowedIdentityOption = None,
) -> None:
    """Create or update a push pool, its Webhook block and automation."""
    from pushpool.usecases.provision import provision_pool

    as_json = _output_json(output, as_json)
    pool_settings = _allowed_identities(pool_type, allowed_identity)
    if with_infra:
        options = InfraOptions(
            yes=yes, region=region, credentials=credentials.value, json=as_json, project=project, static_ips=static_ips
        )
        _exit(
            _provision_infra(
                name,
                type_name=pool_type,
                submit_url=submit_url,
                port=port,
                options=options,
                concurrency_limit=concurrency_limit,
                plan_only=dry_run,
                settings_of_pool=pool_settings,
            )
        )
        return
    settings = local_settings(port)
    deps = _deps(settings)
    target: list[tuple[str, str]] = []  # found once the input is known to be valid (the lookup may warn)

    def url() -> str:
        target.append(
            submit_target(settings, submit_url=submit_url, port=port, events=events.value if events else None)
        )
        return target[0][0]

    result = provision_pool(
        deps,
        name=name,
        type_name=pool_type,
        submit_url=url,
        concurrency_limit=concurrency_limit,
        dry_run=dry_run,
        events=lambda: target[0][1],
        defaults=pool_settings,
    )
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _say(result.summary())


def cmd_provision_infra(
    name: Annotated[str, typer.Argument(help="the work pool's name")],
    submit_url: SubmitUrlOption = None,
    port: PortOption = None,
    output: OutputOption = None,
    as_json: JsonOption = False,
    yes: YesOption = False,
    region: RegionOption = None,
    credentials: CredentialsOption = Credentials.role,
    project: ProjectOption = None,
    static_ips: StaticIpsOption = False,
) -> None:
    """Create the cloud resources of an existing push pool."""
    as_json = _output_json(output, as_json)
    options = InfraOptions(
        yes=yes, region=region, credentials=credentials.value, json=as_json, project=project, static_ips=static_ips
    )
    _exit(_provision_infra(name, type_name=None, submit_url=submit_url, port=port, options=options))


def cmd_deprovision(
    name: Annotated[str, typer.Argument(help="the work pool's name")],
    pool_type: Annotated[
        str | None, typer.Option("--type", help="pool type, when the pool no longer exists in Prefect")
    ] = None,
    output: OutputOption = None,
    as_json: JsonOption = False,
    yes: YesOption = False,
    region: RegionOption = None,
    credentials: DeleteCredentialsOption = Credentials.role,
    project: ProjectOption = None,
) -> None:
    """Remove the cloud resources created for a pool (by tag)."""
    from pushpool.usecases.pools import pool_type as type_of
    from pushpool.usecases.provision_infra import deprovision

    as_json = _output_json(output, as_json)
    options = InfraOptions(yes=yes, region=region, credentials=credentials.value, json=as_json, project=project)
    deps = _deps(local_settings())
    type_name = type_of(deps, name, pool_type)
    session = _InfraSession(
        "Remove these resources?", reading=f"Looking for the resources marked for pool {name}…", yes=yes
    )
    with session:
        result = deprovision(
            deps,
            _provisioner(options, type_name),
            pool=name,
            confirm=session.confirm,
            progress=session.progress,
        )
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.applied:
        _say("Removed.", style="green")
    else:
        _say("\n".join(result.notes))
    _exit(0 if result.applied or not result.plan else 1)


def cmd_pool_delete(
    name: Annotated[str, typer.Argument(help="the work pool's name")],
    pool_type: Annotated[
        str | None,
        typer.Option("--type", help="pool type, when the pool no longer exists and pushpool did not record it"),
    ] = None,
    keep_infra: Annotated[
        bool, typer.Option("--keep-infra", help="leave the cloud resources (remove them later with deprovision)")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be deleted, delete nothing")] = False,
    yes: YesOption = False,
    region: RegionOption = None,
    credentials: DeleteCredentialsOption = Credentials.role,
    project: ProjectOption = None,
    output: OutputOption = None,
) -> None:
    """Delete a push pool and everything pushpool made for it: its automation, its Webhook block and its cloud
    resources (after the plan and the question). Also cleans up after a pool deleted with `prefect work-pool delete`."""
    from pushpool.providers.provisioning import render_plan
    from pushpool.usecases.pools import delete_pool

    as_json = _output_json(output)
    options = InfraOptions(yes=yes, region=region, credentials=credentials.value, json=as_json, project=project)
    deps = _deps(local_settings())
    session = _InfraSession(
        f"Delete work pool {name!r} and everything listed?",
        reading=f"Looking for what pushpool made for {name}…",
        yes=yes,
        label="Deleting",
    )
    with session:
        result = delete_pool(
            deps,
            pool=name,
            type_name=pool_type,
            provisioner_for=lambda type_name: _provisioner(options, type_name),
            keep_infra=keep_infra,
            confirm=session.confirm,
            progress=session.progress,
            plan_only=dry_run,
        )
    if as_json:
        print(json.dumps(result.as_dict(), indent=2))
    elif dry_run:
        _say(render_plan(f"Deleting work pool {name} (--dry-run: nothing was changed):", result.plan))
    elif result.applied:
        _say(f"Deleted work pool {name!r}", style="green")
    for note in result.notes:
        if not as_json:
            _say(note, style="yellow")
    _exit(0 if result.applied or dry_run else 1)


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


def cmd_pool_ls(output: OutputOption = None) -> None:
    """List push pools (and what deleted ones left behind), like `prefect work-pool ls`."""
    from pushpool.usecases.pools import list_pools

    as_json = _output_json(output)
    rows = list_pools(_deps(local_settings()))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        _say("No push pools found.")
        return
    leftovers = [r["name"] for r in rows if r["leftover"]]
    if _tty():
        from rich.table import Table

        table = Table(title="Push Work Pools", caption="(**) denotes a paused pool", caption_style="red")
        table.add_column("Name", style="green", no_wrap=True)
        table.add_column("Type", style="magenta", no_wrap=True)
        table.add_column("ID", justify="right", style="cyan", no_wrap=True)
        table.add_column("Concurrency Limit", style="blue", no_wrap=True)
        table.add_column("Automation", no_wrap=True)
        for r in rows:
            name = r["name"] + (" (**)" if r["is_paused"] else "")
            table.add_row(
                name,
                r["type"] or "(deleted)",
                r["id"] or "-",
                str(r["concurrency_limit"]),
                r["automation"],
            )
        _console().print(table)
    else:
        width = max(len(r["name"]) + 5 for r in rows)
        print(f"{'NAME':<{width}} {'TYPE':<14} {'ID':<36} {'CONCURRENCY LIMIT':<17} AUTOMATION")
        for r in rows:
            name = r["name"] + (" (**)" if r["is_paused"] else "")
            print(
                f"{name:<{width}} {r['type'] or '(deleted)':<14} {r['id'] or '-':<36} "
                f"{r['concurrency_limit']!s:<17} {r['automation']}"
            )
    if leftovers:
        _say(
            "(deleted): the pool is gone, pushpool's automation and Webhook block are left — remove them with "
            "`pushpool work-pool delete <name>`",
            style="yellow",
        )


def cmd_pool_inspect(
    name: Annotated[str, typer.Argument(help="the work pool's name")], output: OutputOption = None
) -> None:
    """Show a push pool, its Webhook block and its automation, like `prefect work-pool inspect`."""
    from pushpool.usecases.pools import inspect_pool

    as_json = _output_json(output)
    found = inspect_pool(_deps(local_settings()), name)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    webhook, automation = found["webhook"], found["automation"]
    variables = (found.get("base_job_template") or {}).get("variables", {}).get("properties", {})
    defaults = {k: v["default"] for k, v in variables.items() if isinstance(v, dict) and "default" in v}
    lines = [
        ("work pool", f"{found['name']} ({found['type']})" if found["exists"] else f"{found['name']} (deleted)"),
        ("id", found.get("id") or "-"),
        ("paused", "yes" if found.get("is_paused") else "no"),
        ("concurrency limit", str(found.get("concurrency_limit"))),
        ("webhook", f"{webhook['block']} → {webhook['url']}" if webhook else "missing"),
        (
            "automation",
            f"{automation['name']} ({'enabled' if automation['enabled'] else 'disabled'})" if automation else "missing",
        ),
        ("job variables", ", ".join(sorted(variables)) or "-"),
        ("defaults", ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(defaults.items())) or "-"),
    ]
    for key, value in lines:
        _say(f"{key + ':':<19}{value}")


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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[_CurrentStderr()],
    )
    for noisy in ("httpx", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_app() -> typer.Typer:
    """The typer application (requires the ``cli`` extra)."""
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
    from pushpool.entrypoints.doctor import cmd_doctor

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


if __name__ == "__main__":
    sys.exit(main())
