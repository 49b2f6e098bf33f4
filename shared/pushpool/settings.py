"""Every setting pushpool reads from the environment, read once, validated, with secrets kept out of ``repr``.

Prefect's own names are used where they exist (``PREFECT_API_URL``, ``PREFECT_API_KEY``,
``PREFECT_API_AUTH_STRING``); pushpool's are prefixed ``PUSHPOOL_``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pushpool.errors import ConfigurationError


def _number(environ: Mapping[str, str], name: str, default: Any, *, minimum: float = 0) -> Any:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _secrets(environ: Mapping[str, str], *names: str) -> tuple[str, ...]:
    return tuple(v for v in (environ.get(n, "").strip() for n in names) if v)


def _check_url(name: str, url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigurationError(f"{name} must be an http(s) URL such as http://127.0.0.1:4200/api, got {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True)
class Settings:
    prefect_api_url: str
    prefect_api_key: str | None = field(default=None, repr=False)
    prefect_api_auth_string: str | None = field(default=None, repr=False)
    # The API URL jobs should use, when it differs from the one pushpool reaches Prefect by.
    job_api_url: str | None = None
    # Webhook authentication: bearer tokens (current, previous) and Standard Webhooks signing secrets.
    webhook_tokens: tuple[str, ...] = field(default=(), repr=False)
    webhook_signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    # Where Prefect's automation should send flow-run events (the submit function's URL).
    submit_url: str | None = None
    # Monitor policy.
    pending_timeout_seconds: float = 120.0
    start_timeout_seconds: float | None = None  # None: each provider's own (backend.start_timeout_seconds)
    exit_grace_seconds: float = 30.0
    cancel_grace_seconds: float = 10.0
    dispatch_ahead_seconds: float = 0.0
    max_recoveries: int = 3
    # Due runs the monitor submits at once (a backlog after an outage or a burst); 1 in pools with a limit.
    dispatch_concurrency: int = 8
    process_dir: Path | None = None
    # The pool types this deployment serves (empty: every type whose provider SDK is installed).
    pool_types: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings.

        Raises:
            ConfigurationError: a missing ``PREFECT_API_URL`` or a malformed value, naming the variable.
        """
        env = os.environ if environ is None else environ
        url = env.get("PREFECT_API_URL", "").strip()
        if not url:
            raise ConfigurationError(
                "PREFECT_API_URL is not set: point it at your Prefect server's API, e.g. http://127.0.0.1:4200/api"
            )
        job_url = env.get("PUSHPOOL_JOB_API_URL", "").strip() or None
        submit_url = env.get("PUSHPOOL_SUBMIT_URL", "").strip() or None
        process_dir = env.get("PUSHPOOL_PROCESS_DIR", "").strip()
        return cls(
            prefect_api_url=_check_url("PREFECT_API_URL", url),
            prefect_api_key=env.get("PREFECT_API_KEY") or None,
            prefect_api_auth_string=env.get("PREFECT_API_AUTH_STRING") or None,
            job_api_url=_check_url("PUSHPOOL_JOB_API_URL", job_url) if job_url else None,
            webhook_tokens=_secrets(env, "PUSHPOOL_WEBHOOK_TOKEN", "PUSHPOOL_WEBHOOK_TOKEN_PREVIOUS"),
            webhook_signing_secrets=_secrets(env, "PUSHPOOL_WEBHOOK_SECRET", "PUSHPOOL_WEBHOOK_SECRET_PREVIOUS"),
            submit_url=_check_url("PUSHPOOL_SUBMIT_URL", submit_url) if submit_url else None,
            pending_timeout_seconds=_number(env, "PUSHPOOL_PENDING_TIMEOUT", 120.0, minimum=1),
            start_timeout_seconds=_number(env, "PUSHPOOL_START_TIMEOUT", None, minimum=1),
            exit_grace_seconds=_number(env, "PUSHPOOL_EXIT_GRACE", 30.0),
            cancel_grace_seconds=_number(env, "PUSHPOOL_CANCEL_GRACE", 10.0),
            dispatch_ahead_seconds=_number(env, "PUSHPOOL_DISPATCH_AHEAD", 0.0),
            max_recoveries=int(_number(env, "PUSHPOOL_MAX_RECOVERIES", 3)),
            dispatch_concurrency=int(_number(env, "PUSHPOOL_DISPATCH_CONCURRENCY", 8, minimum=1)),
            process_dir=Path(process_dir) if process_dir else None,
            pool_types=tuple(t.strip() for t in env.get("PUSHPOOL_POOL_TYPES", "").split(",") if t.strip()),
        )

    @property
    def api_url_for_jobs(self) -> str:
        return self.job_api_url or self.prefect_api_url

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value pushpool holds (for redaction checks)."""
        values = [self.prefect_api_key, self.prefect_api_auth_string, *self.webhook_tokens]
        values += list(self.webhook_signing_secrets)
        return tuple(v for v in values if v)
