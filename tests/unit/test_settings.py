from __future__ import annotations

import pytest
from pushpool.errors import ConfigurationError
from pushpool.settings import Settings


def test_missing_api_url_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="PREFECT_API_URL is not set"):
        Settings.from_env({})


@pytest.mark.parametrize("url", ["localhost:4200/api", "ftp://x/api", "http://"])
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="PREFECT_API_URL: must be an http"):
        Settings.from_env({"PREFECT_API_URL": url})


def test_bad_numbers_name_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="PUSHPOOL_PENDING_TIMEOUT"):
        Settings.from_env({"PREFECT_API_URL": "http://127.0.0.1:1/api", "PUSHPOOL_PENDING_TIMEOUT": "soon"})


def test_secrets_stay_out_of_repr() -> None:
    s = Settings.from_env(
        {
            "PREFECT_API_URL": "http://127.0.0.1:1/api",
            "PREFECT_API_KEY": "pnu_secret",
            "PUSHPOOL_WEBHOOK_TOKEN": "tok-secret",
            "PUSHPOOL_WEBHOOK_SECRET": "sig-secret",
            "PUSHPOOL_ADMIN_TOKEN": "adm-secret",
        }
    )
    text = repr(s)
    assert all(v not in text for v in ("pnu_secret", "tok-secret", "sig-secret", "adm-secret"))
    assert set(s.secret_values()) == {"pnu_secret", "tok-secret", "sig-secret", "adm-secret"}
    assert s.replace(port=1).admin_token == "adm-secret"


def test_job_env_passthrough_is_a_list_of_names_never_pushpools_own() -> None:
    base = {"PREFECT_API_URL": "http://127.0.0.1:1/api"}
    given = Settings.from_env({**base, "PUSHPOOL_JOB_ENV_PASSTHROUGH": " PIP_INDEX_URL, HTTPS_PROXY ,,PIP_INDEX_URL"})
    assert given.job_env_passthrough == ("PIP_INDEX_URL", "HTTPS_PROXY")
    assert Settings.from_env(base).job_env_passthrough == ()
    with pytest.raises(
        ConfigurationError, match="PUSHPOOL_JOB_ENV_PASSTHROUGH: names pushpool's own PUSHPOOL_WEBHOOK_TOKEN"
    ):
        Settings.from_env({**base, "PUSHPOOL_JOB_ENV_PASSTHROUGH": "PIP_INDEX_URL,PUSHPOOL_WEBHOOK_TOKEN"})
    with pytest.raises(ConfigurationError, match="not an environment variable name"):
        Settings.from_env({**base, "PUSHPOOL_JOB_ENV_PASSTHROUGH": "AWS_*"})
