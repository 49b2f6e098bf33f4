"""Credential blocks holding a provider's API token (``modal-credentials``, ``coiled-credentials``), for providers
whose provisioning is only that: the block type is registered on the Prefect server when missing (an open-source
server has none of them), with its secret fields marked so Prefect never shows them; the local token is stored once
in ``<pool>-<block type>`` (an existing block is reused, never overwritten); the pool's variable gets its ``$ref``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushpool.errors import ObjectNotFoundError
from pushpool.providers.provisioning import CREATE, DELETE, EXISTS, ProvisioningError, Step

if TYPE_CHECKING:
    from pushpool.prefect_api.client import PrefectClient


@dataclass(frozen=True)
class TokenBlock:
    slug: str  # the block type, e.g. "modal-credentials"
    title: str  # its display name
    schema: Mapping[str, Any]  # the block schema's fields (with secret_fields)
    variable: str  # the pool variable that takes the block's $ref
    missing: str  # what to tell the user when there is no local token
    stores: str = "the local token, stored once"  # what the plan says the block will hold

    def name(self, pool: str) -> str:
        return f"{pool}-{self.slug}"

    def steps(self, pool: str, prefect: PrefectClient, local: Callable[[], Mapping[str, str] | None]) -> list[Step]:
        """Register the type when missing, then store ``local()`` once; each step returns the pool default."""
        type_id = self._type_id(prefect)
        existing = None
        if type_id is not None:
            try:
                existing = prefect.read_block_document_by_name(self.slug, self.name(pool))
            except ObjectNotFoundError:
                existing = None
        found: list[Step] = []
        if type_id is None:
            secret = ", ".join(self.schema.get("secret_fields", []))
            found.append(Step("block type", self.slug, CREATE, f"{secret} stored as a secret", self._register(prefect)))

        def store() -> dict[str, Any]:
            block_id = existing.id if existing else None
            if block_id is None:
                data = local()
                if not data:
                    raise ProvisioningError(self.missing)
                block_type = self._type_id(prefect)
                if block_type is None:  # pragma: no cover - registered by the step before
                    raise ProvisioningError(f"block type {self.slug} is missing")
                block_id = prefect.create_block_document(
                    {
                        "name": self.name(pool),
                        "data": dict(data),
                        "block_type_id": block_type,
                        "block_schema_id": prefect.read_latest_block_schema_id(block_type),
                    }
                ).id
            return {self.variable: {"$ref": {"block_document_id": block_id}}}

        detail = "reused" if existing else self.stores
        found.append(Step("credentials block", self.name(pool), EXISTS if existing else CREATE, detail, store))
        return found

    def deletions(self, pool: str, prefect: PrefectClient) -> list[Step]:
        try:
            block = prefect.read_block_document_by_name(self.slug, self.name(pool))
        except ObjectNotFoundError:
            return []

        def delete() -> dict[str, Any]:
            prefect.delete_block_document(block.id)
            return {}

        return [Step("credentials block", self.name(pool), DELETE, "", delete)]

    def _type_id(self, prefect: PrefectClient) -> str | None:
        try:
            return prefect.read_block_type_id(self.slug)
        except ObjectNotFoundError:
            return None

    def _register(self, prefect: PrefectClient) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            type_id = self._type_id(prefect) or prefect.create_block_type(
                {"name": self.title, "slug": self.slug, "description": self.schema.get("description", "")}
            )
            try:
                prefect.read_latest_block_schema_id(type_id)
            except ObjectNotFoundError:
                prefect.create_block_schema({"fields": dict(self.schema), "block_type_id": type_id, "capabilities": []})
            return {}

        return run
