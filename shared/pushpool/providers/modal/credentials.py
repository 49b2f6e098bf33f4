"""What ``pushpool doctor`` says of this machine's Modal token (pushpool's own, used by pools with no
``modal_credentials`` block): the SDK's configuration (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET, or ~/.modal.toml)."""

from __future__ import annotations


def credentials_problem() -> tuple[str, str] | None:
    """None when the Modal SDK's configuration has a token; else (what is missing, what to do)."""
    from modal.config import config

    if config.get("token_id") and config.get("token_secret"):
        return None
    return (
        "no Modal token (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or ~/.modal.toml)",
        "run `modal token new`, set the two variables, or give the pool a modal_credentials block",
    )
