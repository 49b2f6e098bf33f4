"""Azure Container Instances: one container group per flow-run attempt (``azure-container-instance:push``)."""
