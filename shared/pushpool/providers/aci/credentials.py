"""What ``pushpool doctor`` says of this machine's Azure credentials (pushpool's own ``DefaultAzureCredential``, used by
pools with no ``aci_credentials`` block). Checked by where they come from, without asking Azure for a token (which
tries each source in turn over the network): a service principal in the environment, a managed identity's endpoint, a
workload identity's token file, or an ``az login`` profile."""

from __future__ import annotations

import os
from pathlib import Path


def credentials_problem() -> tuple[str, str] | None:
    """None when a source of Azure credentials is configured; else (what is missing, what to do)."""
    env = os.environ
    principal = env.get("AZURE_CLIENT_ID") and env.get("AZURE_TENANT_ID")
    secret = env.get("AZURE_CLIENT_SECRET") or env.get("AZURE_CLIENT_CERTIFICATE_PATH")
    if principal and (secret or env.get("AZURE_FEDERATED_TOKEN_FILE")):
        return None
    if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):  # a managed identity (App Service, Functions, ACI)
        return None
    azure_dir = Path(env.get("AZURE_CONFIG_DIR") or Path.home() / ".azure")
    if (azure_dir / "azureProfile.json").is_file() and (azure_dir / "msal_token_cache.json").is_file():
        return None
    return (
        "no Azure credentials found (no AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, no managed identity, no "
        "`az login` profile)",
        "run `az login`, set a service principal's AZURE_* variables, or give the pool an aci_credentials block",
    )
