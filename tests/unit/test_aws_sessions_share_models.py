"""Every boto3 session pushpool makes (one per pool identity, one per provisioner) reads botocore's models through the
one loader of the process (pushpool.providers.ecs.aws.new_session): a new session parses no model file again, and
its clients are still its own, with its own credentials."""

from __future__ import annotations

import botocore.loaders
import pytest
from pushpool.providers.ecs.aws import new_session


@pytest.fixture
def files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    read: list[str] = []
    real = botocore.loaders.JSONFileLoader.load_file

    def counting(self: botocore.loaders.JSONFileLoader, file_path: str) -> object:
        read.append(file_path)
        return real(self, file_path)

    monkeypatch.setattr(botocore.loaders.JSONFileLoader, "load_file", counting)
    return read


def test_a_second_sessions_clients_parse_no_model_again(files_read: list[str]) -> None:
    first = new_session(aws_access_key_id="AKIAFIRST", aws_secret_access_key="one", region_name="us-east-1")
    first.client("ecs")
    first.client("ec2")
    files_read.clear()  # the first session's clients read them, unless another test of this process's did
    second = new_session(aws_access_key_id="AKIASECOND", aws_secret_access_key="two", region_name="eu-west-1")
    ecs = second.client("ecs")
    second.client("ec2")
    assert files_read == []
    assert ecs.meta.region_name == "eu-west-1"
    assert second.get_credentials().access_key == "AKIASECOND"
    assert first.get_credentials().access_key == "AKIAFIRST"
