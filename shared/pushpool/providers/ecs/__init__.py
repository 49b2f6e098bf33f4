"""The ``ecs`` provider: ECS/Fargate tasks (backend), the AWS resources a pool needs (provisioner), and
Prefect's ECS template with what push adds (template)."""
