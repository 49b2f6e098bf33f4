"""How pushpool builds what the coiled SDK's ``coiled.batch.run`` sends (providers/coiled/batch.py): the SDK's parsing
of sizes, durations and commands, its software environment name and its VM type choice, checked against values the
SDK 1.135.6 itself produced (tests/compat_coiled compares whole requests; these pin the pieces without a server)."""

from __future__ import annotations

import pytest
from pushpool.errors import BackendError
from pushpool.providers.coiled import batch


@pytest.mark.parametrize(
    ("text", "size"), [("16 GiB", 16 * 2**30), ("8GiB", 8 * 2**30), ("2 GB", 2 * 10**9), ("500", 500), (1e9, 10**9)]
)
def test_sizes_parse_as_dask_parses_them(text, size) -> None:
    assert batch.parse_bytes(text) == size


@pytest.mark.parametrize("text", ["lots", "16 XiB", "GiB GiB"])
def test_a_bad_size_is_refused_naming_it(text) -> None:
    with pytest.raises(BackendError, match="not a valid memory or disk size"):
        batch.parse_bytes(text)


@pytest.mark.parametrize(("text", "seconds"), [("2 hours", 7200), ("30 minutes", 1800), ("90", 90), (600, 600)])
def test_job_timeouts_parse_as_durations(text, seconds) -> None:
    assert batch.parse_seconds(text) == seconds


def test_the_command_is_joined_as_the_sdk_joins_it() -> None:
    assert batch.user_command(("prefect", "flow-run", "execute")) == "prefect flow-run execute"
    assert batch.user_command(("sh", "-c", 'echo "$X is" && true')) == r'sh -c "echo \"$X is\" && true"'
    assert batch.user_command(("flows/main.py", "--day", "1")) == "python flows/main.py --day 1"


def test_the_software_environment_of_an_image_is_named_as_the_sdk_names_it() -> None:
    assert batch.container_senv_name(batch.DASK_CONTAINER, False) == "dask-x86_64-1ed307e7-ff99-5ed3-9f3e-f6a66676a615"


def test_vm_types_are_narrowed_to_the_sdk_s_families() -> None:
    listed = ["t3.xlarge", "m6i.xlarge", "c6i.xlarge", "r6i.xlarge", "g4dn.xlarge"]
    assert batch.preferred(listed, provider="aws", gpus=0, arm=False, unbalanced=False) == ["m6i.xlarge"]
    assert batch.preferred(listed, provider="aws", gpus=0, arm=False, unbalanced=True) == [
        "m6i.xlarge", "c6i.xlarge", "r6i.xlarge"]  # fmt: skip
    assert batch.preferred(listed, provider="aws", gpus=1, arm=False, unbalanced=False) == ["g4dn.xlarge"]
    query = batch.vm_type_query(None, "16 GiB", 0, "aws", False)
    assert query == {"memory__gte": 15290, "memory__lte": 18898, "backend_type": "vm_aws", "arch": "x86_64"}
    assert batch.vm_type_query(None, None, 1, "gcp", False)["cores__gte"] == 4  # the SDK's GPU sizes: 4-8 cores


def test_options_beyond_the_job_are_refused_naming_them() -> None:
    with pytest.raises(BackendError, match="additional_coiled_options forward_aws_credentials not supported"):
        batch.options_of({"forward_aws_credentials": True, "spot_policy": "spot"})
    with pytest.raises(BackendError, match="cheap is not a valid spot_policy"):
        batch.options_of({"spot_policy": "cheap"})
