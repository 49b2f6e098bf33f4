"""The ``modal`` provider: one Modal Sandbox per flow-run attempt (``modal:push`` pools)."""
