"""The image-architecture pre-flight on private images, read with the credentials the backend already holds, as
``docker pull`` reads them:

* ECS, Amazon ECR (``<account>.dkr.ecr.<region>.amazonaws.com``): ``GetAuthorizationToken`` (moto server over HTTP on
  127.0.0.1, its real answer) gives ``AWS:<password>``, sent as ``Basic`` to ECR's Basic challenge.
* Cloud Run, Artifact Registry (``<location>-docker.pkg.dev``) and ``gcr.io``: the Google credentials' access token,
  sent as ``Basic oauth2accesstoken:<token>`` to the Bearer challenge's realm for a registry token.

The local registry (tests/image_registry.py) demands exactly those credentials; registry hostnames reach it through an
injected httpx transport (nothing is resolved). A credential never goes to a host that is not its cloud's registry; a
registry still unreadable (wrong token, AccessDenied, no credentials) lets the job through, logged without a secret
(every logger at INFO, pushpool's at DEBUG; botocore's own DEBUG logs print response bodies, as pushpool's CLI and
functions leave botocore at WARNING).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
import uuid

import boto3
import pytest
from google.auth import credentials as google_credentials
from pushpool.errors import BackendError
from pushpool.providers.ecs.backend import EcsBackend

from tests.contract.test_cloudrun_backend import make_backend, make_spec
from tests.contract.test_ecs_backend import EcsDriver
from tests.gcp_emulator import CloudRunEmulator
from tests.helpers import PrefectHelper, submit
from tests.image_registry import ImageRegistry
from tests.integration.test_cloudrun import backend_options, make_pool

pytestmark = pytest.mark.integration

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
AR = "us-docker.pkg.dev"
LOGGER = "pushpool.providers.image_platform"


@pytest.fixture(scope="module")
def registry():
    found = ImageRegistry()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def emulator():
    found = CloudRunEmulator().start()
    yield found
    found.stop()


def _repo(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


# -- ECS: Amazon ECR ---------------------------------------------------------------------------------------------------


@pytest.fixture
def ecr_password(aws: dict) -> tuple[str, str]:
    """moto's own GetAuthorizationToken answer: (password, the base64 token it came in)."""
    token = boto3.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    assert user == "AWS" and password
    return password, token


def _ecs_submit(backend: EcsBackend, aws: dict, image: str, architecture: str = "X86_64"):
    spec = EcsDriver(aws, aws["cluster"]).spec()
    definition = {
        "containerDefinitions": [{"name": "prefect", "image": image, "memoryReservation": 512}],
        "runtimePlatform": {"cpuArchitecture": architecture, "operatingSystemFamily": "LINUX"},
    }
    spec = dataclasses.replace(spec, config=spec.config.model_copy(update={"task_definition": definition}))
    return backend.submit(spec)


def _no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert base64.b64encode(f"AWS:{secret}".encode()).decode() not in text
        assert base64.b64encode(f"oauth2accesstoken:{secret}".encode()).decode() not in text


def test_a_private_arm64_only_ecr_image_is_refused_before_any_task_exists(
    registry: ImageRegistry, aws: dict, ecr_password: tuple[str, str]
) -> None:
    password, token = ecr_password
    arm, amd = _repo("ecr-arm"), _repo("ecr-amd")
    for repo in (arm, amd):
        registry.protect(repo, "basic", "AWS", password)
    image = registry.add_index(arm, "1", ["linux/arm64"], host=ECR)
    backend = EcsBackend(check_image_platform=True, registry_client=registry.routed_client())
    families = set(aws["ecs"].list_task_definition_families()["families"])
    with pytest.raises(BackendError) as caught:
        _ecs_submit(backend, aws, image)
    message = caught.value.one_line()
    assert image in message and "has no linux/amd64 variant" in message and "linux/arm64" in message
    assert set(aws["ecs"].list_task_definition_families()["families"]) == families  # nothing registered
    assert f"Basic {token}" in registry.authorizations_to(ECR)  # read with moto's ECR token, as docker pull would
    _no_secret(message, password)

    single = registry.add_single(amd, "1", "amd64", host=ECR)  # its platform is in a config blob, read with the token
    assert _ecs_submit(backend, aws, single).id


def test_the_ecr_token_goes_to_ecr_hosts_only(
    registry: ImageRegistry, aws: dict, ecr_password: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    password, _ = ecr_password
    backend = EcsBackend(check_image_platform=True, registry_client=registry.routed_client())
    for host in ("registry.example.com", f"{ECR}.example.com", "123456789012.dkr.ecr.us-east-1.example.com"):
        repo = _repo("elsewhere")
        registry.protect(repo, "basic", "AWS", password)  # even when it asks for exactly that
        image = registry.add_index(repo, "1", ["linux/arm64"], host=host)
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert _ecs_submit(backend, aws, image).id  # not readable without credentials: let through
        assert registry.authorizations_to(host) == []
        assert f"the registry of {image} wants credentials" in caplog.text
    _no_secret(caplog.text, password)


def test_a_wrong_ecr_token_lets_the_task_through_logged_without_the_secret(
    registry: ImageRegistry, aws: dict, ecr_password: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    password, _ = ecr_password
    repo = _repo("ecr-other")
    registry.protect(repo, "basic", "AWS", "another-accounts-password")
    image = registry.add_index(repo, "1", ["linux/arm64"], host=ECR)
    backend = EcsBackend(check_image_platform=True, registry_client=registry.routed_client())
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="pushpool"):
        assert _ecs_submit(backend, aws, image).id
    assert f"the registry of {image} refused the credentials (401)" in caplog.text
    _no_secret(caplog.text, password)


class _Ecr:
    """An ECR client that counts GetAuthorizationToken calls, answering a token expiring at ``expires``, or AWS's
    AccessDeniedException."""

    def __init__(self, password: str, expires: dt.datetime | None = None, denied: bool = False) -> None:
        self.password, self.expires, self.denied, self.calls = password, expires, denied, 0

    def get_authorization_token(self) -> dict:
        from botocore.exceptions import ClientError

        self.calls += 1
        if self.denied:
            raise ClientError(
                {
                    "Error": {
                        "Code": "AccessDeniedException",
                        "Message": "User: arn:aws:sts::123456789012:assumed-role/pushpool/fn is not authorized to "
                        "perform: ecr:GetAuthorizationToken on resource: * because no identity-based policy allows it",
                    }
                },
                "GetAuthorizationToken",
            )
        token = base64.b64encode(f"AWS:{self.password}".encode()).decode()
        return {"authorizationData": [{"authorizationToken": token, "expiresAt": self.expires}]}


def test_an_ecr_access_denied_lets_the_task_through_logged(
    registry: ImageRegistry, aws: dict, caplog: pytest.LogCaptureFixture
) -> None:
    repo = _repo("ecr-denied")
    registry.protect(repo, "basic", "AWS", "never-given")
    image = registry.add_index(repo, "1", ["linux/arm64"], host=ECR)
    backend = EcsBackend(check_image_platform=True, registry_client=registry.routed_client())
    backend._clients[("ecr", "us-east-1", "")] = ecr = _Ecr("never-given", denied=True)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert _ecs_submit(backend, aws, image).id
    assert ecr.calls >= 1
    assert f"no credentials for the registry {ECR}" in caplog.text and "AccessDeniedException" in caplog.text
    assert f"the registry of {image} wants credentials" in caplog.text


def test_the_ecr_token_is_kept_until_shortly_before_it_expires(registry: ImageRegistry) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    backend = EcsBackend(check_image_platform=True, registry_client=registry.routed_client())
    backend._clients[("ecr", "us-east-1", "")] = fresh = _Ecr("pw-fresh", expires=now + dt.timedelta(hours=12))
    backend._clients[("ecr", "eu-west-1", "")] = ending = _Ecr("pw-ending", expires=now + dt.timedelta(minutes=5))
    for _ in range(3):
        assert backend._ecr_credentials(ECR) == ("AWS", "pw-fresh")
        assert backend._ecr_credentials("123456789012.dkr.ecr.eu-west-1.amazonaws.com") == ("AWS", "pw-ending")
    assert fresh.calls == 1  # kept (12 h left)
    assert ending.calls == 3  # 5 minutes left: asked again each time
    assert backend._ecr_credentials("public.ecr.aws") is None
    assert backend._ecr_credentials("registry-1.docker.io") is None


# -- Cloud Run: Artifact Registry / Container Registry -----------------------------------------------------------------


class FakeGoogleCredentials(google_credentials.Credentials):
    """Google credentials whose refresh gives ``token`` (no network, no metadata server), counting refreshes; or
    failing as an unusable key does."""

    def __init__(self, token: str, fail: bool = False) -> None:
        super().__init__()
        self._next, self._fail, self.refreshes = token, fail, 0

    def refresh(self, request) -> None:
        from google.auth.exceptions import RefreshError

        self.refreshes += 1
        if self._fail:
            raise RefreshError("invalid_grant: Invalid JWT Signature.", {"error": "invalid_grant"})
        self.token = self._next
        self.expiry = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).replace(tzinfo=None)


def _google_token() -> str:
    return f"ya29.fake-{uuid.uuid4().hex}"


def test_a_private_arm64_only_artifact_registry_image_is_refused_before_any_job_exists(
    registry: ImageRegistry, emulator: CloudRunEmulator
) -> None:
    token = _google_token()
    credentials = FakeGoogleCredentials(token)
    backend = make_backend(
        emulator, credentials=credentials, check_image_platform=True, registry_client=registry.routed_client()
    )
    arm, amd = _repo("p/r/arm"), _repo("p/r/amd")
    for repo in (arm, amd):
        registry.protect(repo, "bearer", "oauth2accesstoken", token, realm=f"https://{AR}")
    image = registry.add_index(arm, "1", ["linux/arm64"], host=AR)
    before = len(emulator.requests)
    with pytest.raises(BackendError) as caught:
        backend.submit(make_spec(image=image))
    message = caught.value.one_line()
    assert image in message and "has no linux/amd64 variant" in message and "linux/arm64" in message
    assert len(emulator.requests) == before  # no job was created
    basic = "Basic " + base64.b64encode(f"oauth2accesstoken:{token}".encode()).decode()
    assert basic in registry.authorizations_to(AR)  # the realm got the Google token, the registry its own token
    _no_secret(message, token)

    gcr = "gcr.io"
    registry.protect("p/amd-gcr", "bearer", "oauth2accesstoken", token, realm=f"https://{gcr}")
    amd64 = registry.add_index("p/amd-gcr", "1", ["linux/amd64", "linux/arm64"], host=gcr)
    assert backend.submit(make_spec(image=amd64)).id.startswith("projects/")
    assert basic in registry.authorizations_to(gcr)


def test_the_run_of_a_private_arm64_only_artifact_registry_image_is_crashed_at_once(
    prefect_api: str, tmp_path, prefect: PrefectHelper, registry: ImageRegistry, emulator: CloudRunEmulator
) -> None:
    from tests.helpers import make_deps

    token = _google_token()
    deps = make_deps(prefect_api, tmp_path, prefect_api_key="pnu_test_key_do_not_log")
    deps.backend_options["cloudrun"] = backend_options(
        emulator,
        check_image_platform=True,
        credentials=FakeGoogleCredentials(token),
        registry_client=registry.routed_client(),
    )
    repo = _repo("proj/repo/arm-only")
    registry.protect(repo, "bearer", "oauth2accesstoken", token, realm=f"https://{AR}")
    image = registry.add_index(repo, "2", ["linux/arm64/v8"], host=AR)
    run_id = prefect.create_run(prefect.create_deployment(make_pool(prefect), job_variables={"image": image}))
    try:
        assert submit(deps, run_id).outcome == "crashed"
    finally:
        deps.orchestrator.close()
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and "has no linux/amd64 variant" in state["message"]
    assert not any(image in str(body) for _, _, body in emulator.bodies)
    _no_secret(state["message"], token)


@pytest.mark.parametrize(
    ("host", "realm"),
    [
        ("ghcr.io", "https://ghcr.io"),  # another registry, even asking for oauth2accesstoken
        ("registry.example.com", f"https://{AR}"),  # its realm named after Google's: the realm host is not judged alone
        ("us-docker.pkg.dev.example.com", "https://us-docker.pkg.dev.example.com"),
        (AR, "https://auth.example.com"),  # a Google registry whose realm is elsewhere
        (AR, f"http://{AR}"),  # a realm over plain HTTP
    ],
)
def test_the_google_token_goes_to_google_registries_over_https_only(
    registry: ImageRegistry, emulator: CloudRunEmulator, caplog: pytest.LogCaptureFixture, host: str, realm: str
) -> None:
    token = _google_token()
    backend = make_backend(
        emulator,
        credentials=FakeGoogleCredentials(token),
        check_image_platform=True,
        registry_client=registry.routed_client(),
    )
    repo = _repo("p/r/elsewhere")
    registry.protect(repo, "bearer", "oauth2accesstoken", token, realm=realm)
    image = registry.add_index(repo, "1", ["linux/arm64"], host=host)
    seen = len(registry.seen)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert backend.submit(make_spec(image=image)).id.startswith("projects/")  # unreadable: let through
    assert not any(auth for _, _, auth in registry.seen[seen:])  # no request carried any credential
    assert f"the registry of {image} wants credentials" in caplog.text
    _no_secret(caplog.text, token)


def test_a_wrong_or_unrefreshable_google_credential_lets_the_job_through_logged_without_the_secret(
    registry: ImageRegistry, emulator: CloudRunEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    token = _google_token()
    repo = _repo("p/r/wrong")
    registry.protect(repo, "bearer", "oauth2accesstoken", "the-token-of-someone-else", realm=f"https://{AR}")
    image = registry.add_index(repo, "1", ["linux/arm64"], host=AR)
    wrong = make_backend(
        emulator,
        credentials=FakeGoogleCredentials(token),
        check_image_platform=True,
        registry_client=registry.routed_client(),
    )
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="pushpool"):
        assert wrong.submit(make_spec(image=image)).id.startswith("projects/")
    assert f"the token service of {image} refused the credentials (401)" in caplog.text
    assert f"the registry of {image} wants credentials" in caplog.text
    _no_secret(caplog.text, token)

    caplog.clear()
    failing = FakeGoogleCredentials(token, fail=True)
    backend = make_backend(
        emulator, credentials=failing, check_image_platform=True, registry_client=registry.routed_client()
    )
    backend._clients[("jobs", "")] = wrong._client("jobs")  # the Admin API is reached; only the refresh fails
    backend._clients[("run-rest", "")] = wrong._clients[("run-rest", "")]  # CreateJob's REST session, likewise
    image = registry.add_index(repo, "2", ["linux/arm64"], host=AR)
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="pushpool"):
        assert backend.submit(make_spec(image=image)).id.startswith("projects/")
    assert failing.refreshes >= 1
    assert f"no credentials for the registry {AR} of image {image} (RefreshError" in caplog.text
    _no_secret(caplog.text, token)


def test_the_google_token_is_refreshed_only_when_no_longer_valid(registry: ImageRegistry) -> None:
    from pushpool.providers.cloudrun.backend import CloudRunBackend

    credentials = FakeGoogleCredentials("ya29.fake-kept")
    backend = CloudRunBackend(credentials=credentials, project="p", registry_client=registry.routed_client())
    for host in (AR, "europe-west1-docker.pkg.dev", "gcr.io", "eu.gcr.io"):
        assert backend._registry_credentials(host) == ("oauth2accesstoken", "ya29.fake-kept")
    assert credentials.refreshes == 1
    credentials.expiry = dt.datetime(2000, 1, 1)  # expired
    assert backend._registry_credentials(AR) == ("oauth2accesstoken", "ya29.fake-kept")
    assert credentials.refreshes == 2
    for host in ("ghcr.io", "docker.pkg.dev.example.com", "gcr.io.example.com", ECR, "registry-1.docker.io"):
        assert backend._registry_credentials(host) is None
    assert credentials.refreshes == 2
