"""What ``pushpool doctor`` says of this machine's Google credentials (pushpool's own, used by pools with no
``gcp_credentials`` block): Application Default Credentials found, or what to do."""

from __future__ import annotations


def credentials_problem() -> tuple[str, str] | None:
    """None when Application Default Credentials are found; else (why not, what to do)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError as exc:
        reason = " ".join(str(exc).split())[:200]
        return (
            f"no Google Application Default Credentials ({reason})",
            "run `gcloud auth application-default login`, set GOOGLE_APPLICATION_CREDENTIALS to a service-account key "
            "file, or give the pool a gcp_credentials block",
        )
    return None
