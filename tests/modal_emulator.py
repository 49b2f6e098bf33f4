"""A local Modal control plane: a gRPC server on 127.0.0.1 that the real ``modal`` SDK reaches through
``MODAL_SERVER_URL``, answering the RPCs the ``modal`` backend's path uses with the messages of the service
definitions shipped in the pinned wheel (``modal_proto.api_grpc.ModalClientBase``) — so what it receives is what
the SDK sends, not our guess at it. Any other RPC answers UNIMPLEMENTED and is recorded in ``unimplemented``.

A sandbox either stays as it is until a test drives it (``run_commands=False``: the contract's driver makes it exit
with a code and output, or vanish), or its command really runs on this machine (``run_commands=True``), with the
environment it was sent (``env`` and secrets) on top of this process's ``PATH``: the end-to-end tests run the real
flow from exactly what the SDK sent.

Modal's behaviour it keeps: a sandbox name is unique among an app's *running* sandboxes (ALREADY_EXISTS), listing
returns running sandboxes unless ``include_finished``, tags filter by containment, a terminated sandbox's result is
TERMINATED, the token is checked on every call (UNAUTHENTICATED), an image that does not exist fails its build.
Workspaces: each token is one workspace's (``token`` the default one's; ``add_workspace`` adds others) and apps and
sandboxes belong to the workspace that made them; another workspace's app or sandbox is NOT_FOUND, as Modal answers
for an object id it does not show the caller. ``callers`` records which token made each call and about what.
``faults`` makes the next calls of an RPC fail with a gRPC status (UNAVAILABLE: a transport failure); ``bad_days``
(tests/faults.py) the cloud's bad days by RPC name: throttling (RESOURCE_EXHAUSTED), UNAVAILABLE, INTERNAL, sandboxes
listed late, a concurrency quota (running sandboxes per app: RESOURCE_EXHAUSTED).

Scheduling: Modal accepts a sandbox (``created_at``) and then schedules it onto a worker, which gives it a task; until
then (no capacity, a GPU to wait for) it has no task, its result is still unset (the SDK sees it as running), and
``SandboxGetTaskId`` answers no task id ("not scheduled yet", as the SDK reads it), with the result once it ended.
With ``hold_scheduling`` new sandboxes wait so until a test calls ``schedule``; by default they are scheduled at once.
A scheduled sandbox's listing carries its task (``task_info``: id, ``enqueued_at``, ``started_at``); its command (with
``run_commands``) starts when it is scheduled.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server
from modal_proto import api_grpc, api_pb2

from tests.faults import Faults, grpc_status

GR = api_pb2.GenericResult
MISSING_IMAGE_MARK = "no-such-image"
GPU_TYPES = {
    "T4",
    "L4",
    "A10",
    "A10G",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "L40S",
    "H100",
    "H100!",
    "H200",
    "B200",
    "ANY",
}
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@dataclass
class FakeSandbox:
    id: str
    task_id: str
    app_id: str
    name: str
    tags: dict[str, str]
    definition: Any  # api_pb2.Sandbox, as the SDK sent it
    env: dict[str, str]  # env and secrets, resolved as the container would see them
    created_at: float
    scheduled_at: float | None = None  # when a worker took it (its task started); None while Modal schedules it
    workspace: str = "default"
    result: Any = None  # api_pb2.GenericResult once finished
    output: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        return self.result is None


class ModalEmulator:
    def __init__(self, *, token: tuple[str, str], run_commands: bool = False, hold_scheduling: bool = False) -> None:
        self.token = token
        self.run_commands = run_commands
        self.hold_scheduling = hold_scheduling  # new sandboxes wait for capacity until ``schedule``
        self.workspaces: dict[tuple[str, str], str] = {token: "default"}  # token -> its workspace
        self.workspace_apps: dict[str, dict[str, str]] = {"default": {}}  # workspace -> app name -> id
        self.apps: dict[str, str] = self.workspace_apps["default"]  # the default workspace's: name -> id
        self.app_owner: dict[str, str] = {}  # app id -> workspace
        self.callers: list[tuple[str, str, str]] = []  # (method, token id, the sandbox or app asked about)
        self.named_secrets: dict[str, dict[str, str]] = {}
        self._ephemeral: dict[str, dict[str, str]] = {}
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.calls: list[str] = []  # every RPC answered, in order
        self.requests: list[tuple[str, Any]] = []
        self.unimplemented: list[str] = []
        self.faults: dict[str, list[Status]] = {}
        self.bad_days = Faults()  # operations: RPC names (tests/faults.py)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> ModalEmulator:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = Server([_Handlers(self)])
            self._loop.run_until_complete(self._server.start("127.0.0.1", 0))
            self.port = self._server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="modal-emulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        for sandbox in self.sandboxes.values():
            if sandbox.process and sandbox.process.poll() is None:
                sandbox.process.kill()
        if self._loop and self._server:
            self._server.close()
            asyncio.run_coroutine_threadsafe(self._server.wait_closed(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what tests drive and read -----------------------------------------------------------------------------------

    def finish(self, sandbox_id: str, code: int, lines: list[str]) -> None:
        with self._lock:
            sandbox = self.sandboxes[sandbox_id]
            sandbox.output += lines
            status = GR.GENERIC_STATUS_SUCCESS if code == 0 else GR.GENERIC_STATUS_FAILURE
            sandbox.result = GR(status=status, exitcode=code)

    def fail(self, sandbox_id: str, status: int, exception: str) -> None:
        with self._lock:
            self.sandboxes[sandbox_id].result = GR(status=status, exception=exception)

    def schedule(self, sandbox_id: str) -> None:
        """A worker takes the sandbox (capacity was found): it gets its task and its command starts."""
        with self._lock:
            sandbox = self.sandboxes[sandbox_id]
            if sandbox.scheduled_at is not None or sandbox.result is not None:
                return
            sandbox.scheduled_at = time.time()
        if self.run_commands:
            self._run(sandbox)

    def vanish(self, sandbox_id: str) -> None:
        with self._lock:
            self.sandboxes.pop(sandbox_id)

    def of_attempt(self, run_id: str, attempt: str) -> list[FakeSandbox]:
        return [
            s
            for s in self.sandboxes.values()
            if s.tags.get("pushpool-run") == run_id and s.tags.get("pushpool-attempt") == attempt
        ]

    def sent(self, sandbox_id: str) -> str:
        """What Modal shows of a sandbox (definition, name, tags); secret values are held as secrets."""
        sandbox = self.sandboxes[sandbox_id]
        return json.dumps(
            {"definition": json_format.MessageToDict(sandbox.definition), "name": sandbox.name, "tags": sandbox.tags}
        )

    def wait_process(self, sandbox_id: str, timeout: float = 120) -> FakeSandbox:
        sandbox = self.sandboxes[sandbox_id]
        if sandbox.process is not None:
            sandbox.process.wait(timeout)
            self._reader(sandbox).join(timeout)
        return sandbox

    # -- the control plane ---------------------------------------------------------------------------------------------

    # -- workspaces: who may see what -------------------------------------------------------------------------------

    def add_workspace(self, token: tuple[str, str], name: str) -> None:
        """Another workspace and its token: its apps and sandboxes are its own."""
        with self._lock:
            self.workspaces[token] = name
            self.workspace_apps.setdefault(name, {})

    def tokens_about(self, object_id: str) -> set[str]:
        """The token ids of the calls that asked about a sandbox (by its id or its task's: logs) or an app."""
        with self._lock:
            sandbox = self.sandboxes.get(object_id)
            subjects = {object_id, sandbox.task_id if sandbox else object_id}
            return {token for _, token, subject in self.callers if subject in subjects}

    def _caller(self, method: str, request: Any, metadata: Any) -> str:
        """The caller's workspace; UNAUTHENTICATED for a token Modal does not know (every call carries it)."""
        token = (metadata.get("x-modal-token-id"), metadata.get("x-modal-token-secret"))
        subject = ""
        for name in ("sandbox_id", "task_id", "app_id"):
            try:
                subject = subject or str(getattr(request, name))
            except AttributeError:
                continue
        with self._lock:
            self.callers.append((method, str(token[0]), subject))
            workspace = self.workspaces.get(token)  # type: ignore[arg-type]
        if workspace is None:
            raise GRPCError(Status.UNAUTHENTICATED, "Token is invalid or expired")
        return workspace

    def _own_app(self, app_id: str, workspace: str) -> None:
        if self.app_owner.get(app_id) != workspace:
            raise GRPCError(Status.NOT_FOUND, f"App {app_id} not found")

    def _new_sandbox(self, method: str, request: Any, workspace: str = "default") -> FakeSandbox:
        definition = request.definition
        gpu = definition.resources.gpu_config.gpu_type
        if gpu and gpu.upper() not in GPU_TYPES:
            raise GRPCError(Status.INVALID_ARGUMENT, f"Unknown GPU type: '{gpu}'. Valid types: {sorted(GPU_TYPES)}")
        with self._lock:
            app_id = request.app_id
            self._own_app(app_id, workspace)
            name = definition.name
            if name and any(s.app_id == app_id and s.name == name and s.running for s in self.sandboxes.values()):
                raise GRPCError(Status.ALREADY_EXISTS, f"Sandbox with name '{name}' already exists")
            if self.bad_days.over_quota(sum(1 for s in self.sandboxes.values() if s.app_id == app_id and s.running)):
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED, f"Concurrency limit reached: at most {self.bad_days.quota} sandboxes"
                )
            env: dict[str, str] = {}
            for secret_id in definition.secret_ids:
                env.update(self._ephemeral.get(secret_id, {}))
            for source in getattr(request, "secret_sources", []):
                if source.WhichOneof("source") == "env":
                    env.update(dict(source.env.contents))
                else:
                    env.update(self._ephemeral.get(source.secret_id, {}))
            number = next(self._ids)
            if method == "SandboxCreate":  # the V1 id shape (sb- and 22 characters); V2 ids differ
                sandbox_id = "sb-" + "".join(secrets.choice(_ALPHABET) for _ in range(22))
            else:
                sandbox_id = f"sb-v2-{number:08d}"
            sandbox = FakeSandbox(
                id=sandbox_id,
                task_id=f"ta-{number:08d}" + ("" if method == "SandboxCreate" else "V"),
                app_id=app_id,
                name=name,
                tags={t.tag_name: t.tag_value for t in request.tags},
                definition=definition,
                env=env,
                created_at=time.time() + number * 1e-6,
                workspace=workspace,
            )
            if not self.hold_scheduling:
                sandbox.scheduled_at = sandbox.created_at
            self.sandboxes[sandbox.id] = sandbox
        if self.run_commands and sandbox.scheduled_at is not None:
            self._run(sandbox)
        return sandbox

    def _run(self, sandbox: FakeSandbox) -> None:
        env = {"PATH": _path(), "HOME": os.environ.get("HOME", "/tmp"), **sandbox.env}
        for key in ("PREFECT_HOME", "VIRTUAL_ENV"):
            if key in os.environ and key not in env:
                env[key] = os.environ[key]
        try:
            sandbox.process = subprocess.Popen(
                list(sandbox.definition.entrypoint_args),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            sandbox.result = GR(status=GR.GENERIC_STATUS_INIT_FAILURE, exception=str(exc))
            return
        self._reader(sandbox).start()

    def _reader(self, sandbox: FakeSandbox) -> threading.Thread:
        existing = getattr(sandbox, "_reader_thread", None)
        if existing is not None:
            return existing  # type: ignore[no-any-return]

        def read() -> None:
            assert sandbox.process and sandbox.process.stdout
            for line in sandbox.process.stdout:
                sandbox.output.append(line.rstrip("\n"))
            code = sandbox.process.wait()
            with self._lock:
                if sandbox.result is None:
                    ok = code == 0
                    sandbox.result = GR(
                        status=GR.GENERIC_STATUS_SUCCESS if ok else GR.GENERIC_STATUS_FAILURE, exitcode=code
                    )

        thread = threading.Thread(target=read, daemon=True)
        sandbox._reader_thread = thread  # type: ignore[attr-defined]
        return thread

    def _terminate(self, sandbox_id: str, workspace: str = "default") -> None:
        with self._lock:
            sandbox = self.sandboxes.get(sandbox_id)
            if sandbox is None or sandbox.workspace != workspace:
                raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
            if sandbox.result is None:
                sandbox.result = GR(status=GR.GENERIC_STATUS_TERMINATED, exception="Sandbox terminated")
        if sandbox.process and sandbox.process.poll() is None:
            sandbox.process.terminate()

    def _get(self, sandbox_id: str, workspace: str = "default") -> FakeSandbox:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.workspace != workspace:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return sandbox

    def _list(self, request: Any, workspace: str = "default") -> Any:
        wanted = {t.tag_name: t.tag_value for t in request.tags}
        if request.app_id:
            self._own_app(request.app_id, workspace)
        found = sorted(
            (
                s
                for s in list(self.sandboxes.values())
                if s.workspace == workspace
                and (not request.app_id or s.app_id == request.app_id)
                and (request.include_finished or s.running)
                and all(s.tags.get(k) == v for k, v in wanted.items())
                and (not request.before_timestamp or s.created_at < request.before_timestamp)
                and self.bad_days.listed(s.created_at)
            ),
            key=lambda s: s.created_at,
            reverse=True,
        )[:100]
        return api_pb2.SandboxListResponse(
            sandboxes=[
                api_pb2.SandboxInfo(
                    id=s.id,
                    created_at=s.created_at,
                    app_id=s.app_id,
                    name=s.name,
                    tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in s.tags.items()],
                    task_info=_task_info(s),
                    metadata=api_pb2.SandboxHandleMetadata(app_id=s.app_id),
                )
                for s in found
            ]
        )

    def answer(self, method: str, request: Any, metadata: Any) -> Any:
        workspace = self._caller(method, request, metadata)
        if method == "ClientHello":
            return api_pb2.ClientHelloResponse()
        if method == "AppGetOrCreate":
            with self._lock:
                apps = self.workspace_apps[workspace]
                if request.app_name not in apps:
                    if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                        raise GRPCError(Status.NOT_FOUND, f"App '{request.app_name}' not found")
                    apps[request.app_name] = f"ap-{next(self._ids):08d}"
                    self.app_owner[apps[request.app_name]] = workspace
                return api_pb2.AppGetOrCreateResponse(app_id=apps[request.app_name])
        if method == "EnvironmentGetOrCreate":
            settings = api_pb2.EnvironmentSettings(image_builder_version="2025.06")
            return api_pb2.EnvironmentGetOrCreateResponse(
                environment_id="en-main", metadata=api_pb2.EnvironmentMetadata(name="main", settings=settings)
            )
        if method == "AuthTokenGet":
            token = f"{_b64({'alg': 'none'})}.{_b64({'exp': time.time() + 3600})}.x"
            return api_pb2.AuthTokenGetResponse(token=token)
        if method == "SecretGetOrCreate":
            with self._lock:
                if request.object_creation_type in (
                    api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
                    api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
                ):
                    secret_id = f"st-{next(self._ids):08d}"
                    self._ephemeral[secret_id] = dict(request.env_dict)
                    return api_pb2.SecretGetOrCreateResponse(secret_id=secret_id)
                if request.deployment_name not in self.named_secrets:
                    raise GRPCError(Status.NOT_FOUND, f"Secret '{request.deployment_name}' not found")
                secret_id = f"st-{request.deployment_name}"
                self._ephemeral[secret_id] = self.named_secrets[request.deployment_name]
                return api_pb2.SecretGetOrCreateResponse(secret_id=secret_id)
        if method == "ImageGetOrCreate":
            commands = list(request.image.dockerfile_commands)
            if any(MISSING_IMAGE_MARK in c for c in commands):
                failed = GR(status=GR.GENERIC_STATUS_FAILURE, exception=f"{commands[0]}: manifest unknown")
                return api_pb2.ImageGetOrCreateResponse(image_id=f"im-{next(self._ids):08d}", result=failed)
            done = GR(status=GR.GENERIC_STATUS_SUCCESS)
            return api_pb2.ImageGetOrCreateResponse(image_id=f"im-{next(self._ids):08d}", result=done)
        if method in ("SandboxCreate", "SandboxCreateV2"):
            sandbox = self._new_sandbox(method, request, workspace)
            metadata_out = api_pb2.SandboxHandleMetadata(app_id=sandbox.app_id)
            if method == "SandboxCreate":
                return api_pb2.SandboxCreateResponse(sandbox_id=sandbox.id, metadata=metadata_out)
            return api_pb2.SandboxCreateV2Response(
                sandbox_id=sandbox.id, task_id=sandbox.task_id if sandbox.scheduled_at else None, metadata=metadata_out
            )
        if method in ("SandboxGetTaskId", "SandboxGetTaskIdV2"):
            sandbox = self._get(request.sandbox_id, workspace)
            if sandbox.scheduled_at is None:  # not scheduled yet (or ended before it was): no task
                return api_pb2.SandboxGetTaskIdResponse(task_result=sandbox.result)
            return api_pb2.SandboxGetTaskIdResponse(task_id=sandbox.task_id)
        if method in ("SandboxWait", "SandboxWaitV2"):
            sandbox = self._get(request.sandbox_id, workspace)
            return api_pb2.SandboxWaitResponse(
                result=sandbox.result, metadata=api_pb2.SandboxHandleMetadata(app_id=sandbox.app_id)
            )
        if method in ("SandboxList", "SandboxListV2"):
            return self._list(request, workspace)
        if method in ("SandboxTerminate", "SandboxTerminateV2"):
            self._terminate(request.sandbox_id, workspace)
            return api_pb2.SandboxTerminateResponse()
        if method == "AppFetchLogs":
            sandbox = next(
                (s for s in list(self.sandboxes.values()) if s.task_id == request.task_id and s.workspace == workspace),
                None,
            )
            lines = sandbox.output[-request.limit :] if sandbox and request.limit else []
            items = [
                api_pb2.TaskLogs(
                    data=line + "\n", file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT, timestamp=time.time()
                )
                for line in lines
            ]
            return api_pb2.AppFetchLogsResponse(batches=[api_pb2.TaskLogsBatch(task_id=request.task_id, items=items)])
        return None


class _Handlers:
    """grpclib's handler object: ``ModalClientBase.__mapping__`` over one generic handler per RPC."""

    def __init__(self, emulator: ModalEmulator) -> None:
        self._emulator = emulator

    def __getattr__(self, method: str) -> Any:
        emulator = self._emulator

        async def handle(stream: Any) -> None:
            request = await stream.recv_message()
            pending = emulator.faults.get(method)
            if pending:
                raise GRPCError(pending.pop(0), f"injected fault on {method}")
            if bad := emulator.bad_days.check(method):
                raise GRPCError(grpc_status(bad), f"{bad.kind} on {method}, try again later")
            answer = emulator.answer(method, request, dict(stream.metadata or {}))
            if answer is None:
                emulator.unimplemented.append(method)
                raise GRPCError(Status.UNIMPLEMENTED, f"{method} is not emulated")
            emulator.calls.append(method)
            emulator.requests.append((method, request))
            await stream.send_message(answer)

        return handle

    def __mapping__(self) -> Any:
        return api_grpc.ModalClientBase.__mapping__(self)  # type: ignore[arg-type]


def _task_info(sandbox: FakeSandbox) -> Any:
    """A sandbox's task as its listing shows it: none (only the result, if any) until it is scheduled."""
    if sandbox.scheduled_at is None:
        return api_pb2.TaskInfo(result=sandbox.result)
    return api_pb2.TaskInfo(
        id=sandbox.task_id, enqueued_at=sandbox.created_at, started_at=sandbox.scheduled_at, result=sandbox.result
    )


def _path() -> str:
    """This machine's PATH with this Python's own bin first: the emulated image has `prefect` on its PATH."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
