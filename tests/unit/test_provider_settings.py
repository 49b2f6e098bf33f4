"""A provider's settings live in its folder (issue 27): its variables are read by settings.py like every other, and
validated by the provider's own model when its backend's options are made; the use-cases and Settings name none."""

from __future__ import annotations

import pytest
from pushpool.errors import ConfigurationError
from pushpool.providers import provider_named
from pushpool.settings import Settings
from pushpool.usecases.deps import Deps

API = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}


def test_a_provider_s_variable_reaches_its_backend_s_options() -> None:
    settings = Settings.from_env({**API, "PUSHPOOL_CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8123/"})
    assert settings.provider_environ == {"PUSHPOOL_CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8123/"}
    assert not hasattr(settings, "cloud_run_endpoint")
    deps = Deps.from_settings(settings, pool_types=("cloud-run-v2:push", "process:push"))
    assert deps.backend_options["cloudrun"]["endpoint"] == "http://127.0.0.1:8123"
    assert "logging_endpoint" not in deps.backend_options["cloudrun"]  # unset: the backend's default (Google's)
    assert deps.backend_options["process"]["root"] == settings.home / "jobs"


def test_pushpool_s_own_variables_are_not_a_provider_s() -> None:
    settings = Settings.from_env({**API, "PUSHPOOL_PORT": "4999", "PUSHPOOL_ADMIN_TOKEN": "x" * 32})
    assert settings.port == 4999 and settings.provider_environ == {}


def test_a_malformed_provider_variable_is_refused_naming_it() -> None:
    settings = Settings.from_env({**API, "PUSHPOOL_CLOUD_RUN_ENDPOINT": "run.googleapis.com"})
    with pytest.raises(ConfigurationError, match="PUSHPOOL_CLOUD_RUN_ENDPOINT: must be an http"):
        provider_named("cloudrun").backend_options(settings)


def test_options_given_by_the_caller_win_over_the_settings() -> None:
    settings = Settings.from_env({**API, "PUSHPOOL_CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8123"})
    deps = Deps.from_settings(
        settings, pool_types=("cloud-run-v2:push",), backend_options={"cloudrun": {"endpoint": "http://127.0.0.1:1"}}
    )
    assert deps.backend_options["cloudrun"]["endpoint"] == "http://127.0.0.1:1"
