"""The Modal boundary of the ``modal`` provider: the SDK's exceptions leave as pushpool errors, by exception class
(each one a gRPC status code), never by message text; and the two look-ups the public SDK does not offer.

``modal`` 1.6.4's ``Sandbox.list`` asks only for running sandboxes (``include_finished=True``) and
``Sandbox.from_id`` keeps the sandbox's result private. A later, separate invocation must find an attempt's sandbox
after it finished too, and tell "terminated" from "exited 137", so both are asked here with the SDK's own client and
messages (``SandboxListV2`` with ``include_finished``, ``SandboxWaitV2`` with ``timeout=0``). The monitor also needs
to know a sandbox that Modal is still scheduling (no task yet: ``SandboxGetTaskId``) and when Modal accepted it
(``SandboxInfo.created_at``), which ``Sandbox`` does not expose either. The monitor's status asks one listing of an
app's running sandboxes for all of its runs there (``SandboxListV2``, paged) and reads one sandbox only when the
listing does not show it (finished, gone, or not listed yet). They depend on the pinned SDK version
(pyproject.toml), which tests/contract/test_modal_backend.py runs against the local server.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager
from typing import Any

from pushpool.errors import (
    BackendError,
    BackendUnavailableError,
    JobNotFoundError,
    QuotaExceededError,
    translating,
)

NAME = "modal"
TAG_RUN, TAG_ATTEMPT, TAG_POOL = "pushpool-run", "pushpool-attempt", "pushpool-pool"


def modal_errors() -> AbstractContextManager[None]:
    """Modal's exceptions leave as pushpool errors; the token never appears in a message (Modal never echoes it)."""
    return translating(translate_modal_error)


def translate_modal_error(exc: Exception) -> BackendError | None:
    import modal.exception as me
    from grpclib import GRPCError, Status

    reason = str(exc).strip() or type(exc).__name__
    if isinstance(exc, me.AuthError | me.PermissionDeniedError):
        return BackendError(f"Modal refused the credentials: {reason}", backend=NAME)
    if isinstance(exc, me.NotFoundError):
        return JobNotFoundError(f"not found on Modal: {reason}", backend=NAME)
    if isinstance(exc, me.ResourceExhaustedError):
        return QuotaExceededError(f"Modal has no capacity for the sandbox: {reason}", backend=NAME)
    # ServiceError: gRPC UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, CANCELLED; TimeoutError: the SDK's own retries of
    # those ran out of time (RetryTimeoutError) or a call timed out.
    if isinstance(exc, me.ServiceError | me.InternalError | me.ConnectionError | me.ClientClosed | me.TimeoutError):
        return BackendUnavailableError(f"Modal is unavailable: {reason}", backend=NAME)
    if isinstance(exc, me.Error):  # InvalidError (a bad GPU type, region …), ImageBuildError, AlreadyExistsError …
        return BackendError(f"Modal: {reason}", backend=NAME)
    if isinstance(exc, GRPCError):  # a status the SDK did not wrap (its own stub calls, as sdk.py's look-ups make)
        if exc.status is Status.RESOURCE_EXHAUSTED:
            return QuotaExceededError(f"Modal has no capacity: {reason}", backend=NAME)
        if exc.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.INTERNAL, Status.UNKNOWN):
            return BackendUnavailableError(f"Modal is unavailable ({exc.status.name}): {reason}", backend=NAME)
        return BackendError(f"Modal ({exc.status.name}): {reason}", backend=NAME)
    if isinstance(exc, OSError | TimeoutError):
        return BackendUnavailableError(f"cannot reach Modal: {reason}", backend=NAME)
    return None


def tags(run_id: str, attempt: str, pool: str) -> dict[str, str]:
    return {TAG_RUN: run_id, TAG_ATTEMPT: attempt, TAG_POOL: pool}


def _list_all(client: Any, app_id: str, wanted: Mapping[str, str]) -> list[str]:
    """Ids of the app's sandboxes carrying ``wanted`` tags, running or finished, newest first."""
    from modal._utils.async_utils import synchronizer

    async def ask(client: Any) -> list[str]:
        from modal.sandbox._impl_v2 import auth_metadata
        from modal_proto import api_pb2

        found: list[str] = []
        before = None
        tag_list = [api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in wanted.items()]
        while True:
            request = api_pb2.SandboxListRequest(
                app_id=app_id, before_timestamp=before, include_finished=True, tags=tag_list
            )
            answer = await client._stub.SandboxListV2(request, metadata=await auth_metadata(client))
            if not answer.sandboxes:
                return found
            found += [s.id for s in answer.sandboxes]
            before = answer.sandboxes[-1].created_at

    return synchronizer.create_blocking(ask)(client)  # type: ignore[no-any-return]


def find_sandbox(client: Any, app_id: str, wanted: Mapping[str, str]) -> str | None:
    ids = _list_all(client, app_id, wanted)
    return ids[0] if ids else None


def sandbox_wait(client: Any, sandbox_id: str) -> tuple[Any, str]:
    """The sandbox's ``GenericResult`` (status UNSPECIFIED while it runs) and its app's id (``SandboxWait`` with
    ``timeout=0``, as ``from_id`` asks). Raises NotFoundError when it is unknown."""
    from modal._utils.async_utils import synchronizer

    async def ask(client: Any) -> tuple[Any, str]:
        from modal.sandbox._sandbox import impl_class_for_sandbox_id

        answer = await impl_class_for_sandbox_id(sandbox_id).lookup_by_id(client, sandbox_id)
        return answer.result, answer.metadata.app_id

    return synchronizer.create_blocking(ask)(client)  # type: ignore[no-any-return]


def sandbox_scheduled(client: Any, sandbox_id: str) -> bool:
    """Whether Modal has scheduled the sandbox onto a worker (it has a task): a sandbox waiting for capacity (a GPU)
    has none yet. One ``SandboxGetTaskId``, the call the SDK makes for this ("the task ID of the Sandbox, or an empty
    string if it is not scheduled yet")."""
    from modal._utils.async_utils import synchronizer

    async def ask(client: Any) -> bool:
        from modal.exception import ExecutionError
        from modal.sandbox._sandbox import impl_class_for_sandbox_id

        impl = impl_class_for_sandbox_id(sandbox_id)(client, sandbox_id)
        try:
            return bool(await impl.resolve_task_id_for_logs())
        except ExecutionError:  # "Sandbox task_id is not available yet."
            return False

    return synchronizer.create_blocking(ask)(client)  # type: ignore[no-any-return]


def running_sandboxes(client: Any, app_id: str, wanted: Collection[str]) -> dict[str, Any]:
    """The app's running sandboxes (``SandboxInfo``: ``created_at``, when Modal accepted each; its task, none while
    Modal schedules it) by id: ``SandboxListV2`` with ``include_finished=False``, as ``Sandbox.list`` asks, its pages
    newest first, until every ``wanted`` one is found or the list ends. Raises NotFoundError for an app of another
    workspace."""
    from modal._utils.async_utils import synchronizer

    async def ask(client: Any) -> dict[str, Any]:
        from modal.sandbox._impl_v2 import auth_metadata
        from modal_proto import api_pb2

        found: dict[str, Any] = {}
        missing = set(wanted)
        before = None
        while True:
            request = api_pb2.SandboxListRequest(app_id=app_id, before_timestamp=before, include_finished=False)
            answer = await client._stub.SandboxListV2(request, metadata=await auth_metadata(client))
            if not answer.sandboxes:
                return found
            found.update((s.id, s) for s in answer.sandboxes)
            missing.difference_update(s.id for s in answer.sandboxes)
            if not missing:
                return found
            before = answer.sandboxes[-1].created_at

    return synchronizer.create_blocking(ask)(client)  # type: ignore[no-any-return]
