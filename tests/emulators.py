"""Local emulators of the clouds, made faithful where pushpool relies on behaviour the emulator lacks.

``MotoServer``: moto in server mode on 127.0.0.1 (real HTTP), with three corrections where moto departs from AWS:

* ``RunTask``'s ``clientToken`` idempotency, which moto ignores ("If you retry a request with the same client token,
  ECS returns the task of the original request") — the ECS backend's guarantee against duplicate tasks when submits
  of one attempt race. Without it, no test against moto could tell a stable token from a random one.
* Tasks stay in the state they are in until something moves them (moto's default "immediate" progression walks a task
  from RUNNING to STOPPED, exit 0, in four reads; AWS tasks run until they end). Tests drive task state through moto's
  backend objects (this server runs in the test process), as the task's own container would.
* ``StopTask`` leaves what AWS leaves: ``stopCode`` ``UserInitiated`` and the container's SIGTERM exit code (moto
  leaves exit code 0 and no stop code, which reads as a clean exit).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

RUN_TASK = "AmazonEC2ContainerServiceV20141113.RunTask"


class ClientTokenIdempotency:
    """WSGI middleware: RunTask requests carrying a clientToken already answered get the same answer again."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.answers: dict[str, tuple[str, list[tuple[str, str]], bytes]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") != RUN_TASK:
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            token = json.loads(body or b"{}").get("clientToken")
        except ValueError:
            token = None
        if not token:
            return self.app(environ, start_response)
        with self._guard:
            lock = self._locks.setdefault(token, threading.Lock())
        with lock:  # the same token, concurrently: one request reaches moto, the others wait for its answer
            if token not in self.answers:
                captured: dict[str, Any] = {}

                def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., None]:
                    captured.update(status=status, headers=headers)
                    return lambda _data: None

                payload = b"".join(self.app(environ, capture))
                answer = (captured["status"], captured["headers"], payload)
                if not answer[0].startswith("200"):
                    start_response(answer[0], answer[1])
                    return [payload]
                self.answers[token] = answer
            status, headers, payload = self.answers[token]
        start_response(status, headers)
        return [payload]


class MotoServer:
    """moto's server app behind :class:`ClientTokenIdempotency`, on a loopback port, in a thread of this process (so
    tests can drive task state through moto's backends, as AWS's control plane would)."""

    def __init__(self, port: int) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                return

        self.app = ClientTokenIdempotency(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", port, self.app, True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> MotoServer:
        hold_tasks_still()
        _stop_task_like_aws()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


def hold_tasks_still() -> None:
    """ECS tasks keep their state until a test (or StopTask) changes it."""
    from moto.moto_api import state_manager

    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})


def _stop_task_like_aws() -> None:
    from moto.ecs import models

    original = models.EC2ContainerServiceBackend.stop_task
    if getattr(original, "_like_aws", False):
        return

    def stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
        task = original(self, cluster_str, task_str, reason)
        task.stop_code = "UserInitiated"
        for container in task.containers:
            container.exitCode = 143
        return task

    stop_task._like_aws = True  # type: ignore[attr-defined]
    models.EC2ContainerServiceBackend.stop_task = stop_task
