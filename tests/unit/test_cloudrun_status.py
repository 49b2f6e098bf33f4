"""Cloud Run execution → job status: every condition state, execution reason and common reason Google documents (the
run_v2 client's enums and the run.v2 discovery document alike) has a meaning here; and job ids are valid."""

from __future__ import annotations

import json
import os
import re
import uuid

import googleapiclient
from google.cloud import run_v2
from pushpool.providers.base import JobSpec
from pushpool.providers.cloudrun.backend import COMMON_REASONS, CONDITION_STATES, EXECUTION_REASONS, job_id
from pushpool.providers.cloudrun.config import CloudRunJobConfig

DOC = json.load(
    open(os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents", "run.v2.json"))  # noqa: SIM115
)
CONDITION = DOC["schemas"]["GoogleCloudRunV2Condition"]["properties"]


def test_every_condition_state_is_mapped() -> None:
    documented = set(CONDITION["state"]["enum"]) | {m.name for m in run_v2.Condition.State}
    assert documented == set(CONDITION_STATES)


def test_every_execution_reason_is_mapped() -> None:
    documented = set(CONDITION["executionReason"]["enum"]) | {m.name for m in run_v2.Condition.ExecutionReason}
    assert documented == set(EXECUTION_REASONS)


def test_every_common_reason_has_words() -> None:
    documented = set(CONDITION["reason"]["enum"]) | {m.name for m in run_v2.Condition.CommonReason}
    assert documented == set(COMMON_REASONS)
    assert all(COMMON_REASONS[r] for r in documented - {"COMMON_REASON_UNDEFINED"})


def _spec(pool: str, run_id: str, attempt: str) -> JobSpec:
    return JobSpec(run_id, attempt, pool, "n", ("prefect",), {}, {}, CloudRunJobConfig())


def test_job_ids_are_valid_per_attempt_and_stable() -> None:
    valid = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
    run = str(uuid.uuid4())
    for pool in ("my-pool", "Data Team / Nightly ✨", "x" * 200, "---", "9lives"):
        first, again = job_id(_spec(pool, run, "a1")), job_id(_spec(pool, run, "a1"))
        assert valid.match(first) and len(first) <= 63, first
        assert first == again
        assert job_id(_spec(pool, run, "a2")) != first  # a new attempt, a new job


def test_the_task_timeout_follows_the_maximum_run_time_unless_set() -> None:
    assert CloudRunJobConfig().task_timeout_seconds == 86400
    assert CloudRunJobConfig(max_run_time_seconds=7200).task_timeout_seconds == 7200
    assert CloudRunJobConfig(max_run_time_seconds=7200, timeout=600).task_timeout_seconds == 600
    assert CloudRunJobConfig(max_run_time_seconds=10**7).task_timeout_seconds == 604800  # Cloud Run's longest
