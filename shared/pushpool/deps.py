"""The dependencies a use-case needs, built once per process (a warm Lambda container, ``pushpool serve``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend
from .backends.registry import create_backend
from .clock import Clock, SystemClock
from .orchestrator import PrefectClient
from .settings import Settings
from .templates import pool_type


@dataclass
class Deps:
    settings: Settings
    orchestrator: PrefectClient
    clock: Clock = field(default_factory=SystemClock)
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    _backends: dict[str, Backend] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Deps:
        client = PrefectClient(
            settings.prefect_api_url,
            api_key=settings.prefect_api_key,
            auth_string=settings.prefect_api_auth_string,
        )
        deps = cls(settings=settings, orchestrator=client, **kwargs)
        if settings.process_dir is not None:
            deps.backend_options.setdefault("process", {})["root"] = settings.process_dir
        return deps

    def backend(self, name: str) -> Backend:
        """The backend called ``name``, created on first use (lazy import of its SDK)."""
        with self._lock:
            if name not in self._backends:
                self._backends[name] = create_backend(name, **self.backend_options.get(name, {}))
            return self._backends[name]

    def backend_for_pool_type(self, type_name: str) -> Backend:
        return self.backend(pool_type(type_name).backend)
