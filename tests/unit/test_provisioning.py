"""The provisioning framework's own parts: waiting with a timeout, marks each cloud can hold, errors inside steps."""

from __future__ import annotations

import contextlib
import re

import pytest
from pushpool.errors import BackendError
from pushpool.providers.provisioning import CREATE, EXISTS, Marker, ProvisioningError, Step, apply, wait_until


def test_waiting_gives_up_after_the_timeout_with_a_clear_error() -> None:
    clock = {"now": 0.0}
    checks = []

    def ready() -> bool:
        checks.append(clock["now"])
        return False

    with pytest.raises(ProvisioningError, match="ECS cluster c was not ready after 30 s"):
        wait_until(
            ready,
            what="ECS cluster c",
            timeout=30,
            interval=10,
            sleep=lambda s: clock.update(now=clock["now"] + s),
            monotonic=lambda: clock["now"],
        )
    assert checks == [0, 10, 20, 30]


def test_waiting_returns_as_soon_as_it_is_ready() -> None:
    answers = iter([False, True])
    slept = []
    wait_until(lambda: next(answers), what="x", timeout=60, interval=5, sleep=slept.append)
    assert slept == [5]


@pytest.mark.parametrize("pool", ["My.Pool_1", "x" * 100, "UPPER-lower"])
def test_a_pools_marks_fit_each_clouds_rules(pool: str) -> None:
    marker = Marker(pool)
    assert {"Key": "pushpool:pool", "Value": pool} in marker.aws_tags()
    for key, value in marker.labels().items():  # GCP labels: lowercase letters, digits, - and _, at most 63, no ':'
        assert re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key) and re.fullmatch(r"[a-z0-9_-]{0,63}", value)
    assert pool in marker.description()


def test_a_failing_step_stops_the_run_inside_the_boundary_and_names_what_was_created() -> None:
    seen = []

    @contextlib.contextmanager
    def boundary():
        try:
            yield
        except KeyError as exc:  # the cloud SDK's error, as the provider's boundary translates it
            seen.append(exc)
            raise BackendError(f"DependencyViolation: {exc}", backend="test") from exc

    def boom() -> dict:
        raise KeyError("sg-1 in use")

    steps = [
        Step("role", "r", CREATE, run=lambda: {"role": "arn"}),
        Step("group", "g", EXISTS, run=boom),
        Step("never", "n", CREATE, run=lambda: pytest.fail("ran after a failure")),
    ]
    with pytest.raises(ProvisioningError, match="group g: DependencyViolation") as err:
        apply(steps, boundary=boundary)
    assert err.value.created == ["role r"] and len(seen) == 1
