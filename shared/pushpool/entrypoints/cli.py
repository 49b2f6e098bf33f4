"""The ``pushpool`` command: ``serve``, ``work-pool create``, ``status`` and ``monitor``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from pushpool.errors import ConfigurationError, OrchestratorError, PushpoolError
from pushpool.settings import Settings


def local_token(home: Path) -> str:
    """The webhook token of this machine's ``pushpool serve``, created (mode 0600) on first use."""
    path = home / "webhook-token"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


def local_settings(port: int | None = None) -> Settings:
    """Settings from the environment, completed with local defaults (token file, submit URL, job directory)."""
    settings = Settings.from_env()
    port = port or settings.port
    changes: dict[str, object] = {"port": port}
    if not settings.webhook_tokens:
        changes["webhook_tokens"] = (local_token(settings.home),)
    if not settings.submit_url:
        changes["submit_url"] = f"http://127.0.0.1:{port}/submit"
    if settings.process_dir is None:
        changes["process_dir"] = settings.home / "jobs"
    return settings.replace(**changes)


def _deps(settings: Settings):
    from pushpool.usecases.deps import Deps

    deps = Deps.from_settings(settings)
    try:
        deps.orchestrator.check()
    except OrchestratorError as exc:
        raise ConfigurationError(f"cannot use the Prefect API at {settings.prefect_api_url}: {exc.one_line()}") from exc
    return deps


def cmd_serve(args: argparse.Namespace) -> int:
    from pushpool.entrypoints.serve import Server

    settings = local_settings(args.port)
    deps = _deps(settings)
    server = Server(
        deps,
        host=args.host,
        port=settings.port,
        monitor_interval=args.monitor_interval,
        event_stream=not args.no_event_stream,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server.start()
    print(f"pushpool serving on {server.address} — Prefect API {settings.prefect_api_url}", flush=True)
    done.wait()
    server.stop()
    return 0


def _confirm(args: argparse.Namespace, question: str) -> object:
    def confirm(plan: str) -> bool:
        print(plan)
        if args.yes or not sys.stdin.isatty():
            return True
        answer = input(f"{question} [y/n]: ").strip().lower()
        return answer in ("y", "yes")

    return confirm


def _progress(index: int, total: int, step: object) -> None:
    verb = {"create": "Provisioning", "update": "Updating", "exists": "Already exists:", "delete": "Removing"}
    print(f"[{index}/{total}] {verb.get(step.action, step.action)} {step.resource} {step.name}", flush=True)  # type: ignore[attr-defined]
    if index == total:
        print("Infrastructure " + "━" * 40 + " 100%", flush=True)


def _provisioner(args: argparse.Namespace, type_name: str):
    from pushpool.providers import provider_for_pool_type

    return provider_for_pool_type(type_name).create_provisioner(region=args.region, credentials=args.credentials)


def _print_infra(result: object, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))  # type: ignore[attr-defined]
        return
    outcome = result.outcome  # type: ignore[attr-defined]
    if outcome is not None:
        print("Infrastructure successfully provisioned!" if outcome.created or outcome.changed else "Nothing to do.")
    if result.prefect is not None:  # type: ignore[attr-defined]
        print(result.prefect.summary())  # type: ignore[attr-defined]
    for note in result.notes:  # type: ignore[attr-defined]
        print(note)


def cmd_provision_infra(args: argparse.Namespace) -> int:
    from pushpool.usecases.provision_infra import provision_infra

    settings = local_settings(args.port)
    deps = _deps(settings)
    type_name = getattr(args, "type", None) or deps.orchestrator.read_work_pool(args.name).type
    result = provision_infra(
        deps,
        _provisioner(args, type_name),
        pool=args.name,
        type_name=type_name,
        submit_url=args.submit_url,
        confirm=_confirm(args, "Proceed with infrastructure provisioning?"),
        progress=_progress,  # type: ignore[arg-type]
    )
    _print_infra(result, args)
    return 0 if result.applied else 1


def cmd_deprovision(args: argparse.Namespace) -> int:
    from pushpool.usecases.provision_infra import deprovision

    deps = _deps(local_settings())
    type_name = args.type or deps.orchestrator.read_work_pool(args.name).type
    result = deprovision(
        deps,
        _provisioner(args, type_name),
        pool=args.name,
        confirm=_confirm(args, "Remove these resources?"),
        progress=_progress,
    )  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print("Removed." if result.applied else "\n".join(result.notes))
    return 0 if result.applied or not result.plan else 1


def cmd_pool_create(args: argparse.Namespace) -> int:
    from pushpool.usecases.provision import provision_pool

    if args.provision_infra:
        return cmd_provision_infra(args)
    settings = local_settings(args.port)
    deps = _deps(settings)
    result = provision_pool(
        deps,
        name=args.name,
        type_name=args.type,
        submit_url=args.submit_url,
        concurrency_limit=args.concurrency_limit,
        dry_run=args.dry_run,
    )
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.summary())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pushpool.usecases.in_flight import in_flight

    deps = _deps(local_settings())
    rows = in_flight(deps, pool=args.pool)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no runs in flight")
        return 0
    header = f"{'RUN':<36}  {'NAME':<24} {'POOL':<18} {'STATE':<22} {'AGE':>8}  {'JOB':<10} JOB ID"
    print(header)
    for r in rows:
        print(
            f"{r['run_id']:<36}  {r['name'][:24]:<24} {r['pool'][:18]:<18} {r['state'][:22]:<22} "
            f"{_age(r['age_seconds']):>8}  {r['job_state']:<10} {r['job_id'] or '-'}"
        )
    return 0


def _age(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(seconds)))


def cmd_monitor(args: argparse.Namespace) -> int:
    from pushpool.usecases.monitor import tick

    deps = _deps(local_settings())
    print(json.dumps(tick(deps).as_dict(), indent=2))
    return 0


def _infra_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--region", default=None, help="cloud region (default: the SDK's own configuration)")
    parser.add_argument(
        "--credentials",
        choices=["role", "access-key"],
        default="role",
        help="role: the deployed functions use their own IAM role (default); access-key: create an "
        "IAM user and store one access key in an aws-credentials block",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushpool", description="Push work pools for any Prefect server.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run submit, provision and the monitor against a local Prefect server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--monitor-interval", type=float, default=5.0, help="seconds between monitor ticks")
    serve.add_argument("--no-event-stream", action="store_true", help="rely on the webhook and the monitor only")
    serve.set_defaults(func=cmd_serve)

    pools = sub.add_parser("work-pool", help="manage push work pools")
    pool_sub = pools.add_subparsers(dest="pool_command", required=True)
    create = pool_sub.add_parser("create", help="create or update a push pool, its Webhook block and automation")
    create.add_argument("name")
    create.add_argument("--type", required=True, help="pool type, e.g. process:push")
    create.add_argument("--concurrency-limit", type=int, default=None)
    create.add_argument("--submit-url", default=None, help="where Prefect should call submit")
    create.add_argument("--port", type=int, default=None)
    create.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    create.add_argument("--json", action="store_true")
    create.add_argument("--provision-infra", action="store_true", help="also create the cloud resources it needs")
    _infra_options(create)
    create.set_defaults(func=cmd_pool_create)

    infra = pool_sub.add_parser("provision-infra", help="create the cloud resources of an existing push pool")
    infra.add_argument("name")
    infra.add_argument("--submit-url", default=None)
    infra.add_argument("--port", type=int, default=None)
    infra.add_argument("--json", action="store_true")
    _infra_options(infra)
    infra.set_defaults(func=cmd_provision_infra, type=None)

    remove = pool_sub.add_parser("deprovision", help="remove the cloud resources created for a pool (by tag)")
    remove.add_argument("name")
    remove.add_argument("--type", default=None, help="pool type, when the pool no longer exists in Prefect")
    remove.add_argument("--json", action="store_true")
    _infra_options(remove)
    remove.set_defaults(func=cmd_deprovision)

    status = sub.add_parser("status", help="in-flight runs of push pools with their jobs and ages")
    status.add_argument("--pool", default=None)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    monitor = sub.add_parser("monitor", help="run one monitor tick and print its report")
    monitor.set_defaults(func=cmd_monitor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except PushpoolError as exc:
        print(f"pushpool: error: {exc.one_line()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
