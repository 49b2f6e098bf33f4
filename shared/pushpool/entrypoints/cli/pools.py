"""``pushpool work-pool create | provision-infra | deprovision | delete | ls | inspect``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pushpool.entrypoints.cli.base import (
    AllowedIdentityOption,
    Credentials,
    CredentialsOption,
    DeleteCredentialsOption,
    Events,
    JsonOption,
    OutputOption,
    PortOption,
    ProjectOption,
    RegionOption,
    StaticIpsOption,
    SubmitUrlOption,
    YesOption,
    _deps,
    local_settings,
    submit_target,
    submit_url_for,
)
from pushpool.entrypoints.cli.output import _console, _exit, _InfraSession, _output_json, _say, _tty
from pushpool.errors import InvalidRequestError

if TYPE_CHECKING:
    pass


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
    from pushpool.providers import PROVIDERS, provider_for_pool_type

    provider = provider_for_pool_type(type_name)
    extras = {"static_ips": options.static_ips, "project": options.project}  # the options some provisioners take
    given = {name: value for name, value in extras.items() if value}
    for name in given:
        if name not in provider.provisioner_options:
            able = [t for p in PROVIDERS if name in p.provisioner_options for t in p.pool_types]
            raise InvalidRequestError(f"--{name.replace('_', '-')} is for {', '.join(able)} pools, not {type_name}")
    return provider.create_provisioner(region=options.region, credentials=options.credentials, **given)


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
    """The operator's identity allowlist of a pool (stored as a literal of its job configuration), checked by its
    provider: a malformed id, or a pool type without the setting, is refused before anything changes."""
    if not identities:
        return None
    from pushpool.providers import PROVIDERS, provider_for_pool_type

    provider = provider_for_pool_type(pool_type)
    if provider.pool_settings is None:
        able = [t for p in PROVIDERS if p.pool_settings is not None for t in p.pool_types]
        raise InvalidRequestError(f"--allowed-identity is for {', '.join(able)} pools, not {pool_type}")
    return provider.pool_settings_literals(allowed_identities=identities)


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
