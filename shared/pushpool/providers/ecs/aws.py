"""The AWS boundary of the ECS provider: botocore exceptions leave as pushpool errors, by error code (never by
message text). Used by the backend and the provisioner alike."""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any

from pushpool.errors import BackendError, BackendUnavailableError, retry_after_seconds, translating

NAME = "ecs"
_THROTTLING = {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
_UNAVAILABLE = {"ServerException", "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure"}


def new_session(**options: Any) -> Any:
    """A ``boto3.session.Session(**options)`` whose service models come from the one loader of this process.

    Each boto3 session has a loader of its own that reads and parses botocore's JSON models again (ECS's, EC2's,
    which is megabytes, and the endpoint rules every session reads): pushpool makes a session per pool identity
    (a pool's ``aws_credentials`` block, a role it assumes) and per provisioner, so each paid that in CPU and kept
    its own copy in memory. The loader only reads botocore's data files, the same for every session."""
    import boto3
    import botocore.session

    core = botocore.session.get_session()
    core.register_component("data_loader", _loader(core.get_config_variable("data_path")))
    return boto3.session.Session(botocore_session=core, **options)


@functools.cache
def _loader(data_path: str | None) -> Any:
    """One loader per data path (``AWS_DATA_PATH``): the same for every session of a process."""
    import botocore.loaders

    return botocore.loaders.create_loader(data_path)


def aws_errors() -> AbstractContextManager[None]:
    """The AWS boundary: botocore exceptions leave as pushpool errors (by error code, never by message text)."""
    return translating(translate_aws_error)


def translate_aws_error(exc: Exception) -> BackendError | None:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
    )
    from botocore.exceptions import ConnectionError as AwsConnectionError

    if isinstance(exc, ClientError):
        code = aws_error_code(exc)
        message = exc.response.get("Error", {}).get("Message") or code
        metadata = exc.response.get("ResponseMetadata", {})
        status = int(metadata.get("HTTPStatusCode", 0) or 0)
        wait = retry_after_seconds((metadata.get("HTTPHeaders") or {}).get("retry-after"))
        if code in _THROTTLING or status == 429:
            return BackendUnavailableError(
                f"AWS throttled the request ({code or status}): {message}", backend=NAME, retry_after=wait
            )
        if code in _UNAVAILABLE or status >= 500:
            return BackendUnavailableError(f"AWS is unavailable ({code}): {message}", backend=NAME, retry_after=wait)
        return BackendError(f"{code}: {message}", backend=NAME)
    if isinstance(exc, NoCredentialsError):
        return BackendError("no AWS credentials available to pushpool", backend=NAME)
    if isinstance(exc, NoRegionError):
        return BackendError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or name one", backend=NAME)
    if isinstance(exc, AwsConnectionError | HTTPClientError):  # cannot connect, or timed out / cut off mid-answer
        return BackendUnavailableError(f"cannot reach AWS: {exc}", backend=NAME)
    if isinstance(exc, BotoCoreError):
        return BackendError(f"AWS client error: {exc}", backend=NAME)
    return None


def aws_error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
