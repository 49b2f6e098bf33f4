"""The provisioner of ``modal:push`` pools: Modal needs no resources made ahead (a pool's app is created by its first
sandbox), so provisioning is the credentials — as Prefect's own Modal provisioner does it, on any Prefect server.

* The ``modal-credentials`` block type does not exist on an open-source server: it is registered (type and schema,
  ``token_secret`` a secret field, so Prefect never shows it) when missing.
* The local token — ``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET``, else the active profile of ``~/.modal.toml`` (the SDK's
  own configuration) — is checked with Modal and stored once in the block ``<pool>-modal-credentials`` (reused when
  present); the pool's ``modal_credentials`` default becomes its ``$ref``. No token: one line saying how to make one.
* A token is never printed, logged or put in an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pushpool.errors import PushpoolError
from pushpool.providers.modal.sdk import NAME, modal_errors
from pushpool.providers.provisioning import ProvisioningError, Step
from pushpool.providers.token_blocks import TokenBlock

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient

BLOCK_TYPE = "modal-credentials"
BLOCK_SCHEMA: dict[str, Any] = {
    "title": "ModalCredentials",
    "description": "A Modal token (`modal token new`): what modal:push pools submit sandboxes with.",
    "type": "object",
    "properties": {
        "token_id": {"title": "Token ID", "description": "The token's id (ak-…).", "type": "string"},
        "token_secret": {
            "title": "Token Secret",
            "description": "The token's secret (as-…).",
            "type": "string",
            "format": "password",
            "writeOnly": True,
        },
    },
    "required": ["token_id", "token_secret"],
    "block_type_slug": BLOCK_TYPE,
    "secret_fields": ["token_secret"],
    "block_schema_references": {},
}
NO_TOKEN = (
    "no Modal token here: run `modal token new` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), then run this again"
)
BLOCK = TokenBlock(BLOCK_TYPE, "Modal Credentials", BLOCK_SCHEMA, "modal_credentials", NO_TOKEN)


def local_token() -> tuple[str, str] | None:
    """The token of the local Modal configuration (environment, else the active profile), or None."""
    from modal.config import config

    token_id, token_secret = config.get("token_id"), config.get("token_secret")
    return (str(token_id), str(token_secret)) if token_id and token_secret else None


class ModalProvisioner:
    credentials = "token"

    def __init__(self, *, region: str | None = None, credentials: str | None = None, **_: Any) -> None:
        self.region = region  # Modal places sandboxes by the pool's `region` variable: nothing to provision per region

    def check_access(self) -> str:
        import modal

        token = local_token()
        if token is None:
            raise ProvisioningError(NO_TOKEN)
        if not token[0].startswith("ak-") or not token[1].startswith("as-"):
            raise ProvisioningError(
                "the local Modal token is malformed (token id ak-…, secret as-…): `modal token new`"
            )
        with modal_errors():
            client = modal.Client.from_credentials(*token)
            client.hello()
        return f"Modal token {token[0]}"

    def plan(self, pool: str) -> list[Step]:
        return []  # the pool's app is created by its first sandbox

    def credential_steps(self, pool: str, prefect: PrefectClient) -> list[Step]:
        def local() -> dict[str, str] | None:
            token = local_token()
            return {"token_id": token[0], "token_secret": token[1]} if token else None

        return BLOCK.steps(pool, prefect, local)

    def deprovision_plan(self, pool: str, prefect: PrefectClient) -> list[Step]:
        return BLOCK.deletions(pool, prefect)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        try:
            with modal_errors():
                yield
        except PushpoolError:
            raise
        except ImportError as exc:  # pragma: no cover - the registry checks the SDK first
            raise ProvisioningError(f"{NAME}: {exc}") from exc

    def notes(self, defaults: dict[str, Any]) -> list[str]:
        if "modal_credentials" not in defaults:
            return []
        return ["the pool's modal_credentials default names the block; sandboxes run in the app pushpool-<pool>"]
