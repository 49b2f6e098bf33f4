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
        }
    )
    text = repr(s)
    assert "pnu_secret" not in text and "tok-secret" not in text and "sig-secret" not in text
    assert set(s.secret_values()) == {"pnu_secret", "tok-secret", "sig-secret"}
