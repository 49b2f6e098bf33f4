"""The emulators' shared fault-injection facility (tests/faults.py): its rules do what the tests that use it rely on."""

from __future__ import annotations

import pytest

from tests.faults import Fault, Faults, arm_answer, aws_answer, google_error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fail_next_answers_the_next_n_matching_calls_only() -> None:
    faults = Faults()
    faults.fail_next("POST */jobs", "unavailable", times=2)
    assert faults.check("GET /v2/projects/p/locations/r/jobs/x") is None  # not matching: not consumed
    assert faults.check("post /v2/projects/p/locations/r/JOBS").kind == "unavailable"  # case-insensitive
    assert faults.check("POST /v2/projects/p/locations/r/jobs").kind == "unavailable"
    assert faults.check("POST /v2/projects/p/locations/r/jobs") is None
    assert faults.count() == 2 and faults.count("throttle") == 0


def test_throttle_for_lasts_its_seconds() -> None:
    clock = Clock()
    faults = Faults(clock)
    faults.throttle_for(5, "RunTask", retry_after=2)
    assert faults.check("RunTask") == Fault("throttle", 2)
    clock.now += 4.9
    assert faults.check("RunTask") is not None
    clock.now += 0.2
    assert faults.check("RunTask") is None


def test_operations_lists_and_quotas() -> None:
    clock = Clock()
    faults = Faults(clock)
    assert not faults.still_running("op-1") and faults.listed(clock.now) and not faults.over_quota(10**6)
    faults.operations_take(2)
    assert [faults.still_running("op-2") for _ in range(3)] == [True, True, False]
    faults.list_after(3)
    assert not faults.listed(clock.now - 2.9) and faults.listed(clock.now - 3)
    faults.limit(2)
    assert not faults.over_quota(1) and faults.over_quota(2)
    faults.clear()
    assert faults.listed(clock.now) and not faults.over_quota(2) and not faults.still_running("op-2")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Faults().fail_next("*", "slow")


def test_the_spellings() -> None:
    assert google_error(Fault("throttle"))[0] == 429
    assert google_error(Fault("throttle"))[2][0]["reason"] == "RATE_LIMIT_EXCEEDED"
    assert arm_answer(Fault("throttle", 3)) == (
        429,
        {"Retry-After": "3"},
        {"error": {"code": "TooManyRequests", "message": "The request is being throttled."}},
    )
    assert aws_answer(Fault("throttle"))[2]["__type"] == "ThrottlingException"
    assert aws_answer(Fault("unavailable"))[0] == 503
