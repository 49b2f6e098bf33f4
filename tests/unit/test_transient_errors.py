"""Each provider's boundary sorts its cloud's failures by whether waiting can fix them (issue 23, item 2): a throttled,
unavailable, timed-out or out-of-capacity call is retryable (the run is given back, not crashed), a refusal is not;
the cloud's ``Retry-After`` travels with the error. The SDKs' own exception objects, as their transports raise them."""

from __future__ import annotations

import httpx
import pytest
import requests
from pushpool.errors import (
    BackendError,
    BackendUnavailableError,
    QuotaExceededError,
    retry_after_seconds,
)


def _requests_response(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    response.headers.update(headers or {})
    response.reason = "reason"
    return response


# -- AWS (botocore) ----------------------------------------------------------------------------------------------------


def _client_error(code: str, status: int, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
        },
        "RunTask",
    )


def _aws_cases():  # type: ignore[no-untyped-def]
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    url = "https://ecs.eu-west-1.amazonaws.com/"
    return [
        (_client_error("ThrottlingException", 400), BackendUnavailableError),
        (_client_error("ServiceUnavailableException", 503), BackendUnavailableError),
        (_client_error("SomethingNew", 429), BackendUnavailableError),  # throttled by status, whatever the code
        (_client_error("InternalError", 500), BackendUnavailableError),
        (ReadTimeoutError(endpoint_url=url), BackendUnavailableError),  # the timeout after acceptance
        (ConnectTimeoutError(endpoint_url=url), BackendUnavailableError),
        (ConnectionClosedError(endpoint_url=url), BackendUnavailableError),
        (EndpointConnectionError(endpoint_url=url), BackendUnavailableError),
        (_client_error("AccessDeniedException", 400), BackendError),
        (_client_error("InvalidParameterException", 400), BackendError),
    ]


@pytest.mark.parametrize("case", range(10))
def test_aws(case: int) -> None:
    from pushpool.providers.ecs.aws import translate_aws_error

    exc, expected = _aws_cases()[case]
    translated = translate_aws_error(exc)
    assert type(translated) is expected
    assert translated.retryable is (expected is not BackendError)


def test_aws_retry_after() -> None:
    from pushpool.providers.ecs.aws import translate_aws_error

    translated = translate_aws_error(_client_error("ThrottlingException", 400, {"retry-after": "12"}))
    assert translated is not None and translated.retry_after == 12.0


# -- Google (google-api-core, REST transport) --------------------------------------------------------------------------


def _google_cases():  # type: ignore[no-untyped-def]
    from google.api_core import exceptions as g

    return [
        (g.TooManyRequests("Resource exhausted"), BackendUnavailableError),  # 429
        (g.ResourceExhausted("RESOURCE_EXHAUSTED: quota"), BackendUnavailableError),  # 429 too
        (g.ServiceUnavailable("UNAVAILABLE"), BackendUnavailableError),  # 503
        (g.GatewayTimeout("DEADLINE_EXCEEDED"), BackendUnavailableError),  # 504
        (g.RetryError("Deadline of 60 s exceeded", g.ServiceUnavailable("UNAVAILABLE")), BackendUnavailableError),
        (requests.ConnectionError("connection refused"), BackendUnavailableError),  # the REST transport's own
        (requests.ReadTimeout("read timed out"), BackendUnavailableError),
        (g.PermissionDenied("denied"), BackendError),
        (g.BadRequest("bad image"), BackendError),
    ]


@pytest.mark.parametrize("case", range(9))
def test_google(case: int) -> None:
    from pushpool.providers.cloudrun.gcp import translate_google_error

    exc, expected = _google_cases()[case]
    translated = translate_google_error(exc, "creating the job")
    assert type(translated) is expected
    assert translated.message.startswith("creating the job: ")


def test_google_retry_after() -> None:
    from google.api_core import exceptions as g
    from pushpool.providers.cloudrun.gcp import translate_google_error

    throttled = g.TooManyRequests("slow down", response=_requests_response(429, {"Retry-After": "11"}))
    assert translate_google_error(throttled).retry_after == 11.0
    wrapped = g.RetryError("gave up", throttled)
    assert translate_google_error(wrapped).retry_after == 11.0


# -- Azure (azure-core) ------------------------------------------------------------------------------------------------


def _arm_error(status: int, code: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline.transport import RequestsTransportResponse
    from azure.core.rest import HttpRequest

    body = f'{{"error": {{"code": "{code}", "message": "{code} happened"}}}}'.encode()
    request = HttpRequest("PUT", "https://management.azure.com/subscriptions/s/resourceGroups/rg")
    return HttpResponseError(response=RequestsTransportResponse(request, _requests_response(status, headers, body)))


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, "TooManyRequests", BackendUnavailableError),
        (503, "ServiceUnavailable", BackendUnavailableError),
        (409, "ContainerGroupQuotaReached", QuotaExceededError),
        (400, "InvalidImage", BackendError),
        (403, "AuthorizationFailed", BackendError),
    ],
)
def test_azure(status: int, code: str, expected: type) -> None:
    from pushpool.providers.aci.azure import translate_azure_error

    assert type(translate_azure_error(_arm_error(status, code))) is expected


def test_azure_retry_after() -> None:
    from pushpool.providers.aci.azure import translate_azure_error

    assert translate_azure_error(_arm_error(429, "TooManyRequests", {"Retry-After": "30"})).retry_after == 30.0


# -- Modal (gRPC) ------------------------------------------------------------------------------------------------------


def _modal_cases():  # type: ignore[no-untyped-def]
    import modal.exception as me
    from grpclib import GRPCError, Status
    from modal._utils.grpc_utils import RetryTimeoutError

    return [
        (me.ServiceError("UNAVAILABLE"), BackendUnavailableError),  # the SDK's wrapping of UNAVAILABLE
        (me.ResourceExhaustedError("RESOURCE_EXHAUSTED"), QuotaExceededError),
        (RetryTimeoutError(me.ServiceError("UNAVAILABLE")), BackendUnavailableError),  # its own retries ran out
        (GRPCError(Status.UNAVAILABLE, "unwrapped"), BackendUnavailableError),
        (GRPCError(Status.RESOURCE_EXHAUSTED, "unwrapped"), QuotaExceededError),
        (GRPCError(Status.INVALID_ARGUMENT, "unwrapped"), BackendError),
        (me.InvalidError("no such GPU"), BackendError),
    ]


@pytest.mark.parametrize("case", range(7))
def test_modal(case: int) -> None:
    from pushpool.providers.modal.sdk import translate_modal_error

    exc, expected = _modal_cases()[case]
    assert type(translate_modal_error(exc)) is expected


# -- Coiled (its REST API over httpx) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, BackendUnavailableError),
        (500, BackendUnavailableError),
        (503, BackendUnavailableError),
        (501, BackendError),
        (400, BackendError),
    ],
)
def test_coiled(status: int, expected: type) -> None:
    from pushpool.providers.coiled.api import CoiledApi

    api = CoiledApi("tok-secret", server="http://coiled.test", attempts=1)
    api._http = httpx.Client(
        base_url="http://coiled.test",
        transport=httpx.MockTransport(
            lambda request: httpx.Response(status, headers={"Retry-After": "9"}, json={"message": "no"})
        ),
    )
    with pytest.raises(BackendError) as caught:
        api.request("GET", "/api/v2/user/me")
    assert type(caught.value) is expected
    if expected is BackendUnavailableError:
        assert caught.value.retry_after == 9.0
    assert "tok-secret" not in caught.value.message


def test_retry_after_header_values() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None  # the date form: the backoff decides
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("-3") is None
    assert retry_after_seconds("9999999") == 86400.0


# -- a status call that fails for one region concerns that region's jobs only ------------------------------------------


def test_ecs_status_a_region_that_fails_leaves_the_others_answered() -> None:
    """One handle whose region's client cannot be made (a pid anyone with API access can write) or whose region is
    throttled is UNKNOWN; the other regions' tasks are still described. Real boto3 clients, stubbed answers."""
    import boto3
    from botocore.stub import Stubber
    from pushpool.providers.base import JobHandle, JobState
    from pushpool.providers.ecs.backend import EcsBackend

    session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="y")
    backend = EcsBackend(session=session, max_attempts=1)
    good_arn = "arn:aws:ecs:eu-west-1:123456789012:task/c/abc"
    slow_arn = "arn:aws:ecs:us-east-1:123456789012:task/c/def"
    for region, arn, answer in (
        ("eu-west-1", good_arn, {"tasks": [{"taskArn": good_arn, "lastStatus": "RUNNING"}], "failures": []}),
        ("us-east-1", slow_arn, None),
    ):
        client = session.client("ecs", region_name=region)
        stubber = Stubber(client)
        if answer is None:
            stubber.add_client_error("describe_tasks", "ThrottlingException", "Rate exceeded", 400)
        else:
            stubber.add_response("describe_tasks", answer, {"cluster": "c", "tasks": [arn]})
        stubber.activate()
        backend._clients[("ecs", region, "")] = client
    handles = [
        JobHandle("ecs", "c::arn:aws:ecs:not a region!:123456789012:task/c/xyz"),
        JobHandle("ecs", f"c::{slow_arn}"),
        JobHandle("ecs", f"c::{good_arn}"),
    ]
    found = backend.status(handles)
    assert found[handles[2].id].state is JobState.RUNNING
    assert found[handles[1].id].state is JobState.UNKNOWN and "ThrottlingException" in found[handles[1].id].reason
    assert found[handles[0].id].state is JobState.UNKNOWN


# -- the boundary every adapter shares (errors.translating) ------------------------------------------------------------


def _boundaries():  # type: ignore[no-untyped-def]
    from pushpool.entrypoints.azure_delay import queue_errors
    from pushpool.providers.aci.azure import azure_errors
    from pushpool.providers.cloudrun.gcp import google_errors
    from pushpool.providers.ecs.aws import aws_errors
    from pushpool.providers.modal.sdk import modal_errors

    return {
        "aws": (aws_errors, lambda: _client_error("ThrottlingException", 400)),
        "azure": (azure_errors, lambda: _arm_error(429, "TooManyRequests")),
        "queue": (queue_errors, lambda: _arm_error(429, "TooManyRequests")),
        "google": (google_errors, lambda: _google_cases()[0][0]),
        "modal": (modal_errors, lambda: _modal_cases()[0][0]),
    }


@pytest.mark.parametrize("name", ["aws", "azure", "queue", "google", "modal"])
def test_a_boundary_translates_its_sdk_s_error_and_leaves_the_unknown_as_it_was(name: str) -> None:
    boundary, sdk_error = _boundaries()[name]
    raised = sdk_error()
    with pytest.raises(BackendError) as caught, boundary():
        raise raised
    assert caught.value.__cause__ is raised
    with pytest.raises(KeyError), boundary():  # not the SDK's: not translated
        raise KeyError("x")


def test_a_pushpool_error_crosses_a_boundary_as_it_is_even_one_whose_translator_takes_anything() -> None:
    from pushpool.errors import TemplateError, translating

    ours = TemplateError("a pushpool error")
    with pytest.raises(TemplateError) as passed, translating(lambda exc: BackendError("translated", backend="x")):
        raise ours
    assert passed.value is ours


def test_a_storage_queue_error_is_named_by_storage_s_error_code() -> None:
    from pushpool.entrypoints.azure_delay import queue_errors

    error = _arm_error(404, "QueueNotFound")
    error.error_code = "QueueNotFound"
    with pytest.raises(BackendError, match=r"^Storage queue: QueueNotFound: ") as caught, queue_errors():
        raise error
    assert caught.value.__cause__ is error
