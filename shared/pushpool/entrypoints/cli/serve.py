"""``pushpool serve``: submit, provision and the monitor in one process."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer

from pushpool.entrypoints.cli.base import ADMIN_TOKEN_FILE, SERVE_HEARTBEAT_SECONDS, _deps, local_settings, local_token
from pushpool.errors import ConfigurationError

if TYPE_CHECKING:
    pass


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
