"""The seventh provider's backend: an in-memory control plane (the use-case tests' LatencyBackend) under its own name,
recording the machine each job asked for."""

from __future__ import annotations

from pushpool.providers.base import JobHandle, JobSpec

from tests.fakes import LatencyBackend


class SeventhBackend(LatencyBackend):
    name = "seventh"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.machines: dict[str, str] = {}

    def submit(self, spec: JobSpec) -> JobHandle:
        handle = super().submit(spec)
        self.machines[handle.id] = getattr(spec.config, "machine", "?")
        return handle
