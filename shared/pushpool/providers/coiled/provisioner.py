"""The provisioner of ``coiled:push`` pools: Coiled needs nothing made ahead (each job brings its own cluster), so
provisioning is the credentials, as Prefect's own Coiled provisioner does it — on any Prefect server.

The ``coiled-credentials`` block type (``api_token``, a secret field) is registered when missing; the local token —
``DASK_COILED__TOKEN``, else ``coiled.token`` in the dask configuration ``coiled login`` writes
(``~/.config/dask/coiled.yaml``, or ``DASK_CONFIG``) — is checked with Coiled (``/api/v2/user/me``) and stored once in
``<pool>-coiled-credentials``; the pool's ``credentials`` default becomes its ``$ref``. The token is never shown.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pushpool.providers.coiled.api import CoiledApi
from pushpool.providers.provisioning import ProvisioningError, Step
from pushpool.providers.token_blocks import TokenBlock

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient

NO_TOKEN = "no Coiled token here: run `coiled login` (or set DASK_COILED__TOKEN), then run this again"
BLOCK = TokenBlock(
    "coiled-credentials",
    "Coiled Credentials",
    {
        "title": "CoiledCredentials",
        "description": "A Coiled API token (`coiled login`): what coiled:push pools submit jobs with.",
        "type": "object",
        "properties": {
            "api_token": {"title": "API Token", "type": "string", "format": "password", "writeOnly": True},
        },
        "required": ["api_token"],
        "block_type_slug": "coiled-credentials",
        "secret_fields": ["api_token"],
        "block_schema_references": {},
    },
    "credentials",
    NO_TOKEN,
)
_TOKEN_LINE = re.compile(r"^\s+token:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)


def local_token() -> str | None:
    """``DASK_COILED__TOKEN``, else ``coiled.token`` in the dask configuration files ``coiled login`` writes."""
    if os.environ.get("DASK_COILED__TOKEN"):
        return os.environ["DASK_COILED__TOKEN"]
    folder = Path(os.environ.get("DASK_CONFIG") or Path.home() / ".config" / "dask")
    for path in sorted(folder.glob("*.y*ml")):
        text = path.read_text(errors="replace")
        section = text.split("coiled:", 1)[1] if "coiled:" in text else ""
        match = _TOKEN_LINE.search(section)
        if match:
            return match.group(1)
    return None


class CoiledProvisioner:
    credentials = "token"

    def __init__(self, *, region: str | None = None, credentials: str | None = None, **_: Any) -> None:
        self.region = region  # a pool's jobs choose their region (the `region` variable)

    def check_access(self) -> str:
        token = local_token()
        if token is None:
            raise ProvisioningError(NO_TOKEN)
        api = CoiledApi(token)
        try:
            return f"Coiled account {api.account()}"
        finally:
            api.close()

    def plan(self, pool: str) -> list[Step]:
        return []  # each job brings its own cluster

    def credential_steps(self, pool: str, prefect: PrefectClient) -> list[Step]:
        def local() -> dict[str, str] | None:
            token = local_token()
            return {"api_token": token} if token else None

        return BLOCK.steps(pool, prefect, local)

    def deprovision_plan(self, pool: str, prefect: PrefectClient) -> list[Step]:
        return BLOCK.deletions(pool, prefect)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        yield  # CoiledApi raises pushpool errors already

    def notes(self, defaults: dict[str, Any]) -> list[str]:
        return ["the pool's credentials default names the block"] if "credentials" in defaults else []
