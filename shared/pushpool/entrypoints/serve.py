"""``pushpool serve``: submit and provision over HTTP on loopback, the monitor on a timer, and Prefect's event
stream as a faster trigger — the three functions in one process, for a local Prefect server.

``POST /submit`` takes the webhook token (or a webhook signature); ``POST /provision`` and ``POST /monitor`` take
only the admin token (``AdminAuth``: the webhook token is in Prefect's Webhook block, readable by Prefect's API users;
it gets 403). Without an admin token they are refused. ``pushpool work-pool create`` provisions in its own process
and needs neither.

A running serve records where it listens in ``<PUSHPOOL_HOME>/serve/<port>.json`` (its pid, its submit URL and the
Prefect API it serves; removed when it stops), so that ``pushpool work-pool create`` points the pool's webhook at the
serve that actually runs: :func:`record_serve`, :func:`running_serves`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pushpool.entrypoints.auth import AdminAuth, WebhookAuth
from pushpool.entrypoints.event_stream import EventStream, RunEvent, SeenEvents
from pushpool.entrypoints.http import (
    DUPLICATE,
    MAX_BODY_BYTES,
    Response,
    handle_admin,
    handle_run_event,
    handle_submit,
    timed_tick,
)
from pushpool.entrypoints.prometheus import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pushpool.entrypoints.prometheus import PrometheusMetrics
from pushpool.entrypoints.timers import TimerTrigger
from pushpool.errors import (
    InvalidRequestError,
    LengthRequiredError,
    MethodNotAllowedError,
    PushpoolError,
    RequestTooLargeError,
    UnknownObjectError,
)
from pushpool.prefect_api.models import WorkPool
from pushpool.usecases.deps import Deps
from pushpool.usecases.event_publisher import EventPublisher
from pushpool.usecases.heartbeat import stop_serving
from pushpool.usecases.monitor import dispatch_due
from pushpool.usecases.tick_report import TickReport

log = logging.getLogger("pushpool.serve")

SUBMIT_PATH = "/submit"
# The methods each path answers: any other method is 405 (with Allow), any other path 404, both as JSON.
_ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("GET", "HEAD"),
    SUBMIT_PATH: ("POST",),
    "/provision": ("POST",),
    "/monitor": ("POST",),
    "/metrics": ("GET", "HEAD"),
}
_ROUTES_HINT = "pushpool serve answers POST /submit, POST /provision, POST /monitor, GET /health and GET /metrics"
SUBMIT_BODY_HINT = '{"flow_run_id": "<uuid>"} as application/json'
MAX_CHUNK_LINE = 1024  # a chunk-size line (with extensions) or a trailer line
MAX_TRAILERS = 32
# What http.server answers on its own, said as what to do (the request never reached a handler).
_PROTOCOL_ERRORS = {
    400: "malformed HTTP request",
    414: "request line too long: shorten the URL",
    431: "request headers too large (at most 100 headers of at most 65,536 bytes each): send fewer or smaller headers",
    505: "HTTP version not supported: use HTTP/1.1",
}
# Connections waiting to be accepted: a burst of callers (Prefect's automations firing together, or 50 clients at
# once) waits here instead of being reset. socketserver's default of 5 reset connections under a burst of 50.
LISTEN_BACKLOG = 1024
PREFECT_CHECK_SECONDS = 600.0  # how often serve looks for a failing scheduler (usecases/doctor.py)
STREAM_UNKNOWN_RETRIES = (0.2, 0.5, 1.0)  # seconds before each new read of a run a streamed event named, unknown yet
BURST_SWEEP_RUNS = 8  # timers firing together from which serve sweeps its pools instead of submitting each run


# -- where a running serve listens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeRecord:
    """What a running ``pushpool serve`` writes under its home: enough for the CLI to find it."""

    pid: int
    port: int
    address: str  # e.g. http://127.0.0.1:4280
    submit_url: str  # what Prefect's Webhook block should call
    prefect_api_url: str
    event_stream: bool = True  # it reads Prefect's event stream: new pools' automations can stay disabled


def _records_dir(home: Path) -> Path:
    return home / "serve"


def record_serve(home: Path, record: ServeRecord) -> Path:
    """Write ``record`` (atomically) and return its path."""
    directory = _records_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record.port}.json"
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(asdict(record)))
    partial.replace(path)
    return path


def remove_record(path: Path) -> None:
    """Remove a record this process wrote (one another serve wrote since is left alone)."""
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_serves(home: Path, prefect_api_url: str) -> list[ServeRecord]:
    """The serves running under ``home`` for this Prefect API, by port; records of dead ones are removed."""
    found: list[ServeRecord] = []
    directory = _records_dir(home)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = ServeRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if not _alive(record.pid):
            path.unlink(missing_ok=True)
        elif record.prefect_api_url.rstrip("/") == prefect_api_url.rstrip("/"):
            found.append(record)
    return sorted(found, key=lambda r: r.port)


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that hangs up (while we read its request) is one line, not a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, (BrokenPipeError, ConnectionResetError)):
            log.info("a caller (%s) hung up: %s", client_address[0], type(error).__name__)
        else:
            log.error("request from %s failed", client_address[0], exc_info=error)


class Server:
    def __init__(
        self,
        deps: Deps,
        *,
        host: str = "127.0.0.1",
        port: int = 4280,
        monitor_interval: float = 5.0,
        event_stream: bool = True,
        pool_names: Collection[str] | None = None,
    ) -> None:
        """``pool_names``: serve only these pools' ticks (None: every pool of a type it serves)."""
        # The pools show Ready in Prefect while this serve's monitor ticks; its heartbeats are never meant to come more
        # often than its ticks (``pushpool serve`` sets 30 s, as Prefect's worker heartbeats, unless told otherwise).
        interval = max(1.0, monitor_interval, deps.settings.heartbeat_interval_seconds)
        deps.settings = deps.settings.replace(heartbeat_interval_seconds=interval)
        self.deps = deps
        # GET /metrics (Prometheus' format): what this process does, counted from its start (usecases/metrics.py).
        self.metrics = deps.metrics if isinstance(deps.metrics, PrometheusMetrics) else PrometheusMetrics()
        deps.use_metrics(self.metrics)
        self.auth = WebhookAuth(deps.settings.webhook_tokens, deps.settings.webhook_signing_secrets)
        admin = deps.settings.admin_token
        self.admin = AdminAuth([admin] if admin else [], webhook=self.auth)
        self.monitor_interval = monitor_interval
        self.pool_names = tuple(pool_names) if pool_names is not None else None
        self.stopping = threading.Event()
        # Events, webhooks and timers are handled here: as many at once as the monitor dispatches, twice over (200 runs
        # due in one second waited behind 4 threads: 27 s at p95 in `make bench`).
        workers = max(4, 2 * deps.settings.dispatch_concurrency)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pushpool-work")
        self.httpd = _HTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self.events = EventStream(deps.settings, self._on_event, pool_types=deps.pool_types) if event_stream else None
        # With both triggers on, each Prefect event arrives twice (stream first, webhook ~200 ms later): act once.
        self.seen = SeenEvents()
        self._threads: list[threading.Thread] = []
        self.last_tick: TickReport | None = None
        # Scheduled runs on time: a run not due yet gets a timer for its time minus its pool's lead (punctual.py).
        self.timers = TimerTrigger(self._on_timer, fire_many=self._on_timers)
        self._sweep = threading.Event()  # wakes the monitor loop for a tick now (a burst of timers, or stop)
        deps.trigger = self.timers
        # What pushpool does to runs, as Prefect events: sent from a thread of its own, never in a submit's way.
        self.publisher = EventPublisher(deps.events, deps.orchestrator)

    @property
    def address(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        http = threading.Thread(target=self.httpd.serve_forever, name="pushpool-http", daemon=True)
        monitor = threading.Thread(target=self._monitor_loop, name="pushpool-monitor", daemon=True)
        checks = threading.Thread(target=self._prefect_checks, name="pushpool-prefect-checks", daemon=True)
        self._threads = [http, monitor, checks]
        for thread in self._threads:
            thread.start()
        self.timers.start()
        if self.events is not None:
            self.events.start()
        self.publisher.start()
        log.info(
            "pushpool serving on %s (submit: POST %s%s; provision and monitor: %s; monitor every %.1f s; "
            "event stream %s) for Prefect API %s",
            self.address,
            self.address,
            SUBMIT_PATH,
            "POST with the admin token" if self.admin.configured else "off (no admin token)",
            self.monitor_interval,
            "on" if self.events is not None else "off",
            self.deps.settings.prefect_api_url,
        )

    def stop(self) -> None:
        self.stopping.set()
        self._sweep.set()
        self.timers.stop()
        if self.events is not None:
            self.events.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for thread in self._threads:
            if thread.name == "pushpool-monitor":
                thread.join(timeout=10)  # its tick ends before the pools are marked as no longer served
        if self.last_tick is not None:  # the pools its ticks heartbeated into
            stop_serving(self.deps, self.last_tick.served)
        self.publisher.stop()  # what the last actions emitted, with a short timeout

    def _monitor_loop(self) -> None:
        # The first tick comes one interval after start, not at once: serve's start-up stays cheap for a large
        # Prefect server (a tick reads and heartbeats every pool), and the event stream and webhook act meanwhile.
        self._sweep.wait(self.monitor_interval)
        while not self.stopping.is_set():
            self._sweep.clear()
            try:
                started = time.time()
                self.last_tick = timed_tick(self.deps, pools=self._pools())
                report = self.last_tick.as_dict()
                if report["dispatched"] or report["errors"] or any(k != "none" for k in report["reconciled"]):
                    log.info("monitor tick: %s", json.dumps({**report, "started_at": started}))
            except PushpoolError as exc:
                log.warning("monitor tick failed: %s", exc.one_line())
            except Exception:
                log.exception("monitor tick crashed")
            self._sweep.wait(self.monitor_interval)

    def _prefect_checks(self) -> None:
        """Say, one line each, what is wrong with the Prefect server that pushpool cannot fix (a failing scheduler,
        known-bad pins: usecases/doctor.py), at start and every PREFECT_CHECK_SECONDS; each line once."""
        from pushpool.usecases.doctor import prefect_server_warnings

        said: set[str] = set()
        while not self.stopping.is_set():
            try:
                for line in prefect_server_warnings(self.deps, pools=self.pool_names):
                    if line not in said:
                        said.add(line)
                        log.warning("Prefect server: %s", line)
            except Exception:
                log.exception("checking the Prefect server failed")
            self.stopping.wait(PREFECT_CHECK_SECONDS)

    def _pools(self) -> list[WorkPool] | None:
        if self.pool_names is None:
            return None
        return [self.deps.orchestrator.read_work_pool(name) for name in self.pool_names]

    def _on_event(self, event: RunEvent) -> None:
        if event.kind == "pool-changed":  # a pool, queue or deployment changed: the runs after it read it again
            self.deps.pool_reads.forget()
            return
        if event.kind in ("submit", "cancel"):
            if not self.seen.first(event.event_id):
                log.debug("event: %s", json.dumps({"flow_run_id": event.run_id, "outcome": DUPLICATE}))
                return
            received = time.time()
            self.pool.submit(
                self._safe,
                self._handle_streamed,
                event.run_id,
                trigger="event-stream",
                _at=received,
                _event_id=event.event_id,
            )
        elif event.kind == "final":
            self.pool.submit(self._safe, self._dispatch_pool, event.pool_name)

    def _handle_streamed(self, run_id: str, **kwargs: Any) -> dict[str, Any]:
        """``handle_run_event`` for an event from the stream, which can arrive before the run it names can be read: a
        run created moments before was once answered 404 on a loaded machine and, with no automation and no monitor
        tick to come, stayed Scheduled. An unknown run is read again after each of ``STREAM_UNKNOWN_RETRIES``."""
        for delay in STREAM_UNKNOWN_RETRIES:
            try:
                return handle_run_event(self.deps, run_id, **kwargs)
            except UnknownObjectError:
                if self.stopping.wait(delay):  # serve is stopping: the run is left to the next monitor
                    raise
        return handle_run_event(self.deps, run_id, **kwargs)

    def _on_timers(self, run_ids: list[str]) -> None:
        """Timers whose time came together. A few: each run is submitted on its own. A burst (as many as the monitor
        dispatches at once, or more): one monitor tick now instead — its sweep lists the pools' due runs in one call
        each and dispatches each run with 3 calls (its claim, pid and progress state; fewer with bulk claims) against
        4 to 7 for a run submitted on its own, so 200 runs due the same second drain sooner and the claims do not race
        each other."""
        if len(run_ids) >= BURST_SWEEP_RUNS:
            log.info("%d timers at once: a monitor sweep now", len(run_ids))
            self._sweep.set()
            return
        for run_id in run_ids:
            self._on_timer(run_id)

    def _on_timer(self, run_id: str) -> None:
        if not self.stopping.is_set():
            self.pool.submit(self._safe, handle_run_event, self.deps, run_id, trigger="timer", _at=time.time())

    def _dispatch_pool(self, pool_name: str) -> None:
        pool = self.deps.orchestrator.read_work_pool(pool_name)
        if pool.concurrency_limit is not None:  # a slot may have freed up
            dispatch_due(self.deps, pool, TickReport())

    def _safe(self, fn: Any, *args: Any, _at: float | None = None, _event_id: str | None = None, **kwargs: Any) -> None:
        try:
            result = fn(*args, **kwargs)
            if isinstance(result, dict) and result.get("outcome") not in (None, "not-ready", "not-claimed"):
                log.info("event: %s", json.dumps({**result, "received_at": _at}))
        except PushpoolError as exc:
            if exc.http_status >= 500:  # transient: a second delivery of the event (the webhook) may act on it
                self.seen.forget(_event_id)
            log.info("event handling: %s", exc.one_line())
        except Exception:
            log.exception("event handling crashed")

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet; we log outcomes ourselves
                return

            def _send(self, response: Response, headers: Mapping[str, str] | None = None) -> None:
                payload = response.json_bytes()
                self.send_response(response.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _send_metrics(self) -> None:
                """Every series in Prometheus' text format (no token: like /health, on serve's own address)."""
                payload = server.metrics.exposition()
                self.send_response(200)
                self.send_header("Content-Type", METRICS_CONTENT_TYPE)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _refuse(self, exc: PushpoolError, *, close: bool = False) -> None:
                """An error answer; ``close``: the request's body was not read (or cannot be), so the connection
                ends after the answer."""
                if close:
                    self.close_connection = True
                allowed = getattr(exc, "allowed", ())
                self._send(
                    Response(exc.http_status, {"error": exc.one_line()}),
                    {"Allow": ", ".join(allowed)} if allowed else None,
                )

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """What http.server answers itself (a malformed request line, headers over its limits, an unknown
                method): JSON like every other answer, and the connection closed (the request was not read)."""
                reason = _PROTOCOL_ERRORS.get(code) or f"{message or 'bad request'}"
                if code == 501:
                    reason = f"method {self.command!r} is not supported: {_ROUTES_HINT}"
                self.close_connection = True
                if self.request_version == "HTTP/0.9":  # an unparsed request line: answer with a status line anyway
                    self.request_version = "HTTP/1.1"
                try:
                    self._send(Response(code, {"error": reason}))
                except OSError:
                    pass

            def _body(self) -> bytes:
                """The request body: by Content-Length, or chunked.

                Raises:
                    InvalidRequestError: a malformed Content-Length or chunk.
                    LengthRequiredError: a Transfer-Encoding other than chunked.
                    RequestTooLargeError: over MAX_BODY_BYTES (found before reading past it).
                """
                encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
                if encoding:
                    if encoding != "chunked":
                        raise LengthRequiredError(
                            f"Transfer-Encoding {encoding[:40]!r} is not accepted: send the body with Content-Length "
                            "or Transfer-Encoding: chunked"
                        )
                    if self.headers.get("Content-Length") is not None:  # ambiguous framing (request smuggling)
                        raise InvalidRequestError("both Content-Length and Transfer-Encoding: send one of them")
                    return self._chunked()
                raw = (self.headers.get("Content-Length") or "0").strip()
                if not raw.isdigit():
                    raise InvalidRequestError(f"Content-Length {raw[:40]!r} is not a number of bytes")
                length = int(raw)
                if length > MAX_BODY_BYTES:
                    raise RequestTooLargeError(f"body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit")
                return self.rfile.read(length) if length else b""

            def _chunked(self) -> bytes:
                body = bytearray()
                while True:
                    line = self.rfile.readline(MAX_CHUNK_LINE + 1)
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                    except ValueError:
                        size = -1
                    if len(line) > MAX_CHUNK_LINE or size < 0 or not line.endswith(b"\n"):
                        raise InvalidRequestError("malformed chunked body: a chunk size line is not hexadecimal")
                    if len(body) + size > MAX_BODY_BYTES:
                        raise RequestTooLargeError(f"chunked body over the {MAX_BODY_BYTES}-byte limit")
                    if size == 0:
                        break
                    chunk = self.rfile.read(size)
                    if len(chunk) < size or self.rfile.readline(MAX_CHUNK_LINE + 1).strip():
                        raise InvalidRequestError("malformed chunked body: a chunk is shorter than its size")
                    body += chunk
                for _ in range(MAX_TRAILERS):  # trailers (ignored) up to the blank line that ends the body
                    if not self.rfile.readline(MAX_CHUNK_LINE + 1).strip():
                        return bytes(body)
                raise InvalidRequestError("malformed chunked body: too many trailer lines")

            def _route(self) -> str | None:
                """The path (its query ignored) if this method may be used on it.

                Raises:
                    UnknownObjectError: an unknown path (404).
                    MethodNotAllowedError: a known path, another method (405, with ``Allow``).
                """
                path = urlsplit(self.path).path
                allowed = _ROUTES.get(path)
                if allowed is None:
                    raise UnknownObjectError(f"no such path {path[:100]!r}: {_ROUTES_HINT}")
                if self.command not in allowed:
                    hint = f" (body: {SUBMIT_BODY_HINT})" if path == SUBMIT_PATH else ""
                    raise MethodNotAllowedError(
                        f"{self.command} is not allowed on {path}: use {' or '.join(allowed)}{hint}", allowed=allowed
                    )
                return path

            def do_GET(self) -> None:
                self._handle()

            do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = do_GET
            do_POST = do_GET

            def _handle(self) -> None:
                received = time.time()  # logged with the outcome: trigger received → job accepted is measurable
                try:
                    path = self._route()
                except PushpoolError as exc:  # the body (if any) is left unread: the connection closes
                    self._refuse(
                        exc, close=bool(self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"))
                    )
                    return
                if path == "/health":
                    self._send(Response(200, {"ok": True}))
                    return
                if path == "/metrics":
                    self._send_metrics()
                    return
                try:
                    body = self._body()
                except PushpoolError as exc:
                    self._refuse(exc, close=True)
                    return
                headers = dict(self.headers.items())
                if path == SUBMIT_PATH:
                    response = handle_submit(
                        server.deps, server.auth, headers, body, trigger="webhook", seen=server.seen
                    )
                    if response.status == 200 and response.body.get("outcome") == DUPLICATE:
                        # The event stream delivered it first: normal with both triggers on, nothing to report.
                        log.debug("submit: %s", json.dumps({**response.body, "received_at": received}))
                    elif response.status == 200:
                        log.info("submit: %s", json.dumps({**response.body, "received_at": received}))
                    else:
                        log.info("submit refused (%d): %s", response.status, response.body.get("error"))
                else:
                    response = handle_admin(server.deps, server.admin, path, headers, body, pools=server._pools)
                    if response.status in (401, 403):
                        log.warning("%s refused (%d): %s", path, response.status, response.body.get("error"))
                try:
                    self._send(response)
                except (BrokenPipeError, ConnectionResetError):
                    # Prefect's webhook client gave up waiting: what was asked was done all the same.
                    self.close_connection = True
                    done = {k: response.body[k] for k in ("flow_run_id", "outcome", "error") if k in response.body}
                    log.info(
                        "%s: the caller hung up before the answer; handled all the same: %s",
                        path.lstrip("/"),
                        json.dumps({"status": response.status, **done}),
                    )

        return Handler
