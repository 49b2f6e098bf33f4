"""What the commands share: the options, help as Prefect's CLI shows it, the local token files and settings, where
the pool's webhook should call submit, and the use-cases' dependencies."""

from __future__ import annotations

import enum
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pushpool.entrypoints.cli.output import _warn
from pushpool.errors import ConfigurationError, OrchestratorError
from pushpool.settings import Settings

if TYPE_CHECKING:
    pass


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
            metavar="ID",
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
