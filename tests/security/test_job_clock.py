"""A hostile deployment author against the job's clock (issue 23, item 1): the monitor's maximum run time and start
timeout count from when the provider accepted the job (providers/base.py, ``accepted_at``). Where pushpool writes that
time itself (ACI keeps no creation time: a tag on the group), nothing the author sets moves it later."""

from __future__ import annotations

import datetime as dt
import uuid

from azure.mgmt.containerinstance.models import ContainerGroup
from pushpool.providers.aci.backend import SUBMITTED_TAG, group_body, to_status
from pushpool.providers.aci.config import AciJobConfig
from pushpool.providers.base import JobSpec, JobState

SUB = "00000000-0000-0000-0000-000000000001"
FUTURE = "2999-01-01T00:00:00+00:00"


def _spec(labels: dict[str, str]) -> JobSpec:
    config = AciJobConfig(resource_group_name="rg", subscription_id=SUB)
    return JobSpec(str(uuid.uuid4()), str(uuid.uuid4()), "pool", "run", ("prefect",), {}, labels, config)


def test_a_label_named_like_the_submission_tag_never_stands_in_for_it() -> None:
    """The author's labels become the group's tags; one named ``pushpool-submitted-at`` (a time far ahead, which
    would never time the job out), first among 60 (ARM keeps 50), is replaced by pushpool's own and never crowds it
    out."""
    labels = {SUBMITTED_TAG: FUTURE, **{f"label-{i}": "x" for i in range(60)}}
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    tags = group_body(_spec(labels), "westeurope")["tags"]
    after = dt.datetime.now(dt.timezone.utc)
    assert len(tags) <= 50
    assert SUBMITTED_TAG in tags, "pushpool's submission time was crowded out of the group's tags"
    assert before <= dt.datetime.fromisoformat(tags[SUBMITTED_TAG]) <= after


def test_a_tampered_submission_tag_cannot_put_the_clock_after_what_the_group_shows() -> None:
    """A tag changed after creation (by whoever may write the group's tags) is bounded by the group's own times: the
    job's clock is never later than its container's start."""
    started = dt.datetime(2026, 12, 6, 4, 0, tzinfo=dt.timezone.utc)
    container = {
        "name": "prefect",
        "properties": {
            "image": "i",
            "resources": {"requests": {"cpu": 1, "memoryInGB": 1}},
            "instanceView": {"currentState": {"state": "Running", "startTime": started.isoformat()}, "events": []},
        },
    }
    body = {
        "id": "/x",
        "location": "l",
        "tags": {SUBMITTED_TAG: FUTURE},
        "properties": {"osType": "Linux", "provisioningState": "Succeeded", "containers": [container]},
    }
    status = to_status(ContainerGroup.deserialize(body))
    assert status.state is JobState.RUNNING
    assert status.accepted_at == started
