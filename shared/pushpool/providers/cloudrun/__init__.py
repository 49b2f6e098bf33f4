"""The ``cloudrun`` provider: Cloud Run jobs over the Admin API v2 (backend), Prefect's ``cloud-run-v2`` and
``cloud-run`` templates with what push adds (template)."""
