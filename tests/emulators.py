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
* A deregistered (INACTIVE) task definition is what AWS makes of it: ``DescribeTaskDefinition`` of a family names its
  latest ACTIVE revision (moto: the latest, whatever its status), and ``RunTask`` refuses an INACTIVE revision with
  ``ClientException`` "TaskDefinition is inactive" (moto starts the task).

``RequestLog`` records every JSON-protocol request (ECS, Logs, Secrets Manager …) the server answers, with the access
key id it was signed with: what a client *sent*, for tests that compare two clients (pushpool and Prefect's worker)
or check whose identity signed a call. ``MotoServer.instance`` is the running server.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

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


_KEY_ID = re.compile(r"Credential=([^/,\s]+)/")


class RequestLog:
    """WSGI middleware: the last ``size`` JSON-protocol requests, in order, each ``{"seq", "service", "action", "body",
    "key_id"}`` (``service`` from the target prefix, e.g. ``AmazonEC2ContainerServiceV20141113``)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], size: int = 20_000) -> None:
        self.app = app
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        self._seq = itertools.count(1)
        self._last = 0
        self._guard = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                parsed = json.loads(body or b"{}")
            except ValueError:
                parsed = None
            key = _KEY_ID.search(environ.get("HTTP_AUTHORIZATION", ""))
            service, _, action = target.rpartition(".")
            with self._guard:
                self._last = next(self._seq)
                self.entries.append(
                    {
                        "seq": self._last,
                        "service": service,
                        "action": action,
                        "body": parsed,
                        "key_id": key.group(1) if key else None,
                    }
                )
        return self.app(environ, start_response)

    def mark(self) -> int:
        """The sequence number of the last request logged so far (pass it to :meth:`since`)."""
        with self._guard:
            return self._last

    def since(self, mark: int, action: str | None = None) -> list[dict[str, Any]]:
        """Requests logged after ``mark`` (only ``action`` ones when given), oldest first."""
        with self._guard:
            return [e for e in self.entries if e["seq"] > mark and (action is None or e["action"] == action)]


class MotoServer:
    """moto's server app behind :class:`ClientTokenIdempotency` and :class:`RequestLog`, on a loopback port, in a
    thread of this process (so tests can drive task state through moto's backends, as AWS's control plane would)."""

    instance: ClassVar[MotoServer | None] = None

    def __init__(self, port: int) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                return

        self.app = ClientTokenIdempotency(DomainDispatcherApplication(create_backend_app))
        self.requests = RequestLog(self.app)
        self._server = make_server("127.0.0.1", port, self.requests, True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> MotoServer:
        hold_tasks_still()
        _stop_task_like_aws()
        _inactive_definitions_like_aws()
        _task_times_like_aws()
        self._thread.start()
        MotoServer.instance = self
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


def _task_times_like_aws() -> None:
    """A task has ``createdAt`` (ECS accepted it) and, once its containers run, ``startedAt``, as in AWS; moto's tasks
    carry neither. moto starts a task RUNNING at once, so both are its creation time; StopTask sets ``stoppedAt``."""
    import datetime as dt

    from moto.ecs import models

    task_class = models.Task
    if getattr(task_class.__init__, "_like_aws", False):
        return
    init, stop = task_class.__init__, models.EC2ContainerServiceBackend.stop_task

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.created_at = self.started_at = dt.datetime.now(dt.timezone.utc)

    def stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
        task = stop(self, cluster_str, task_str, reason)
        task.stopped_at = getattr(task, "stopped_at", None) or dt.datetime.now(dt.timezone.utc)
        return task

    __init__._like_aws = True  # type: ignore[attr-defined]
    task_class.__init__ = __init__
    models.EC2ContainerServiceBackend.stop_task = stop_task


def _inactive_definitions_like_aws() -> None:
    from moto.ecs import models
    from moto.ecs.exceptions import EcsClientException

    backend = models.EC2ContainerServiceBackend
    if getattr(backend.describe_task_definition, "_like_aws", False):
        return
    describe, run = backend.describe_task_definition, backend.run_task

    def describe_task_definition(self: Any, task_definition_str: str) -> Any:
        name = task_definition_str.split("/")[-1]
        if ":" in name or name not in self.task_definitions:
            return describe(self, task_definition_str)
        active = [r for r, d in self.task_definitions[name].items() if d.status == "ACTIVE"]
        if not active:
            raise EcsClientException("Unable to describe task definition.")
        return self.task_definitions[name][max(active)]

    def run_task(self: Any, cluster_str: str, task_definition_str: str, *args: Any, **kwargs: Any) -> Any:
        if self.describe_task_definition(task_definition_str).status != "ACTIVE":
            raise EcsClientException("TaskDefinition is inactive")
        return run(self, cluster_str, task_definition_str, *args, **kwargs)

    describe_task_definition._like_aws = True  # type: ignore[attr-defined]
    backend.describe_task_definition = describe_task_definition
    backend.run_task = run_task
