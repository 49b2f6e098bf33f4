"""The provider registry answers whether a provider's SDK is installed without importing it — also for SDKs that live
in a namespace package (``azure.mgmt.…``) whose parent is not installed at all, as in the AWS Lambda layer."""

from __future__ import annotations

import pytest
from pushpool.errors import ConfigurationError
from pushpool.providers import PROVIDERS, Provider


def _provider(*sdk: str) -> Provider:
    return Provider(name="probe", templates={}, backend="x:y", config="x:y", extra="probe", sdk=sdk)


def test_a_missing_sdk_in_a_missing_namespace_is_not_installed_and_says_which_extra() -> None:
    missing = _provider("pushpool_no_such_namespace.mgmt.client")
    assert missing.installed is False
    with pytest.raises(ConfigurationError, match="probe"):
        missing.require_installed()


def test_an_installed_sdk_is_installed() -> None:
    assert _provider("json", "email.mime").installed is True


def test_every_registered_provider_answers_without_raising() -> None:
    assert all(isinstance(p.installed, bool) for p in PROVIDERS)
