"""The image-architecture pre-flight: an image with no linux/amd64 variant never becomes a Cloud Run job; its run is
Crashed at once with a message naming the image, what it has, and the platform to build for. A local registry on
127.0.0.1 serves the images (tests/image_registry.py); the Cloud Run side is the local Admin API."""

from __future__ import annotations

import pytest
from pushpool.errors import BackendError
from pushpool.providers.image_platform import ImagePlatforms, missing_platform

from tests.contract.test_cloudrun_backend import make_backend, make_spec
from tests.gcp_emulator import CloudRunEmulator
from tests.helpers import PrefectHelper, submit
from tests.image_registry import ImageRegistry
from tests.integration.test_cloudrun import backend_options, make_pool

pytestmark = pytest.mark.integration


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


def test_platforms_are_read_from_an_index_a_single_manifest_or_not_at_all(registry: ImageRegistry) -> None:
    platforms = ImagePlatforms()
    multi = registry.add_index("flows/multi", "1", ["linux/amd64", "linux/arm64/v8"])
    single = registry.add_single("flows/single", "1", "arm64")
    registry.private.add("team/private")
    assert platforms.platforms(multi) == {"linux/amd64", "linux/arm64/v8"}
    assert platforms.platforms(single) == {"linux/arm64"}
    assert platforms.platforms(f"{registry.host}/team/private:1") is None  # wants credentials: not judged
    assert platforms.platforms(f"{registry.host}/flows/nothing:1") is None  # unknown here: Cloud Run will say
    assert platforms.platforms("127.0.0.1:9/unreachable/registry:1") is None
    assert not missing_platform(None, "linux/amd64")
    assert missing_platform(frozenset({"linux/arm64/v8"}), "linux/amd64")
    assert not missing_platform(frozenset({"linux/amd64/v2"}), "linux/amd64")


def test_an_arm64_only_image_is_refused_before_any_job_exists(
    registry: ImageRegistry, emulator: CloudRunEmulator
) -> None:
    image = registry.add_index("flows/arm", "1", ["linux/arm64"])
    backend = make_backend(emulator, check_image_platform=True)
    before = len(emulator.requests)
    with pytest.raises(BackendError) as caught:
        backend.submit(make_spec(image=image))
    message = caught.value.one_line()
    assert image in message and "linux/arm64" in message and 'platform="linux/amd64"' in message
    assert len(emulator.requests) == before  # no job was created
    hits = len(registry.hits)
    with pytest.raises(BackendError):
        backend.submit(make_spec(image=image))
    assert len(registry.hits) == hits  # the answer is cached per image reference

    amd64 = registry.add_index("flows/amd", "1", ["linux/amd64", "linux/arm64"])
    assert backend.submit(make_spec(image=amd64)).id.startswith("projects/")


def test_the_run_of_an_arm64_only_image_is_crashed_at_once(
    prefect_api: str, tmp_path, prefect: PrefectHelper, registry: ImageRegistry, emulator: CloudRunEmulator
) -> None:
    from tests.helpers import make_deps

    deps = make_deps(prefect_api, tmp_path, prefect_api_key="pnu_test_key_do_not_log")
    deps.backend_options["cloudrun"] = backend_options(emulator, check_image_platform=True)
    image = registry.add_index("flows/arm-only", "2", ["linux/arm64/v8"])
    run_id = prefect.create_run(prefect.create_deployment(make_pool(prefect), job_variables={"image": image}))
    try:
        assert submit(deps, run_id).outcome == "crashed"
    finally:
        deps.orchestrator.close()
    state = prefect.read_run(run_id)["state"]
    assert state["type"] == "CRASHED" and "has no linux/amd64 variant" in state["message"]
    assert not any(image in str(body) for _, _, body in emulator.bodies)


@pytest.mark.parametrize(
    ("platforms", "architecture", "refused"),
    [
        (["linux/arm64"], None, True),  # Fargate's default X86_64
        (["linux/arm64"], "ARM64", False),
        (["linux/amd64"], "ARM64", True),
        (["linux/amd64", "linux/arm64/v8"], None, False),
    ],
)
def test_ecs_checks_the_image_against_the_tasks_runtime_platform(
    registry: ImageRegistry, aws: dict, platforms: list, architecture: str | None, refused: bool
) -> None:
    import dataclasses
    import uuid

    from pushpool.providers.ecs.backend import EcsBackend

    from tests.contract.test_ecs_backend import EcsDriver

    image = registry.add_index(f"flows/ecs-{uuid.uuid4().hex[:6]}", "1", platforms)
    spec = EcsDriver(aws, aws["cluster"]).spec()
    definition = {"containerDefinitions": [{"name": "prefect", "image": image, "memoryReservation": 512}]}
    if architecture:
        definition["runtimePlatform"] = {"cpuArchitecture": architecture, "operatingSystemFamily": "LINUX"}
    spec = dataclasses.replace(spec, config=spec.config.model_copy(update={"task_definition": definition}))
    backend = EcsBackend(check_image_platform=True)
    families = set(aws["ecs"].list_task_definition_families()["families"])
    if refused:
        with pytest.raises(BackendError) as caught:
            backend.submit(spec)
        assert image in caught.value.one_line() and "has no linux/" in caught.value.one_line()
        assert set(aws["ecs"].list_task_definition_families()["families"]) == families  # nothing registered
    else:
        assert backend.submit(spec).id
