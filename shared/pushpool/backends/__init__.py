"""Compute backends behind one Protocol, loaded lazily by name (see ``registry``).

Importing this package imports no cloud SDK; ``registry.create_backend("ecs", …)`` imports only the ECS module.
"""
