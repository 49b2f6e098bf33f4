"""What ``pushpool doctor`` says of this machine's Coiled token (pushpool's own, used by pools with no ``credentials``
block): ``DASK_COILED__TOKEN``, what the backend reads."""

from __future__ import annotations

import os


def credentials_problem() -> tuple[str, str] | None:
    """None when ``DASK_COILED__TOKEN`` is set; else (what is missing, what to do)."""
    if os.environ.get("DASK_COILED__TOKEN"):
        return None
    return (
        "no Coiled API token",
        "set DASK_COILED__TOKEN (`coiled login` shows it), or give the pool a credentials block with api_token",
    )
