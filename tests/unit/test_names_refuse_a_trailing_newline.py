"""A name with a newline at its end is refused like any other bad name. Python's ``$`` also matches before a final
``\\n``: the fuzzer found a provision request for pool ``'0\\n'`` that passed the name check and crashed on the URL
Prefect's path was built into (HTTP 500, not 400). Every name pattern now ends at the end of the string (``\\Z``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pushpool.errors import PushpoolError
from pushpool.job_environment import check_passthrough
from pushpool.providers.ecs.provisioner import check_pool_name
from pushpool.usecases.provision import validate_pool_name

CHECKS: dict[str, tuple[Callable[[str], object], str]] = {
    "work pool name": (validate_pool_name, "ok-pool"),
    "ECS resource name": (check_pool_name, "ok-pool"),
    "environment variable name": (lambda name: check_passthrough([name]), "MY_VAR"),
}


@pytest.mark.parametrize("what", CHECKS)
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n\n"])
def test_a_good_name_with_a_newline_after_it_is_refused(what: str, tail: str) -> None:
    check, good = CHECKS[what]
    check(good)  # the name alone is good
    with pytest.raises((PushpoolError, ValueError)):
        check(good + tail)


def test_provision_refuses_such_a_name_before_calling_prefect() -> None:
    from pushpool.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="invalid work pool name"):
        validate_pool_name("0\n")
