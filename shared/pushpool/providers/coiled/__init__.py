"""The ``coiled`` provider: one Coiled batch job (on a one-VM cluster) per flow-run attempt (``coiled:push`` pools)."""
