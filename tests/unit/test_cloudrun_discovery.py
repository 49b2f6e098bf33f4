"""A Cloud Run Job body is judged against the run.v2 discovery document (providers/cloudrun/discovery.py): fields of
the current API pass even where the pinned protobufs do not know them; what the API does not describe is refused."""

from __future__ import annotations

from pushpool.providers.cloudrun import discovery


def _job(**task: object) -> dict:
    return {"template": {"template": {"containers": [{"image": "x"}], **task}}}


def test_a_field_of_the_current_api_passes() -> None:
    volumes = [{"name": "fs", "filestore": {"volume": "projects/p/locations/l/volumePools/v/volumes/x"}}]
    assert discovery.problems(_job(volumes=volumes, timeout="600s", maxRetries=0)) == []


def test_what_the_api_does_not_describe_is_named() -> None:
    found = discovery.problems(_job(noSuchField=1, timeout="ten minutes", maxRetries="x"))
    assert any("template.template.noSuchField: not a field" in p for p in found), found
    assert any("template.template.timeout: expected a duration" in p for p in found), found
    assert any("template.template.maxRetries: expected an integer" in p for p in found), found
    assert discovery.problems({"launchStage": "NOT_A_STAGE"}) == [
        "launchStage: 'NOT_A_STAGE' is not one of " + ", ".join(discovery.run_v2_document()["schemas"][
            "GoogleCloudRunV2Job"]["properties"]["launchStage"]["enum"])
    ]  # fmt: skip
