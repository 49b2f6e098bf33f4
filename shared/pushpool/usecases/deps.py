"""The dependencies a use-case needs, built once per process (a warm Lambda container, ``pushpool serve``).

``pool_types`` are the pool types this deployment serves (``PUSHPOOL_POOL_TYPES``; by default every type whose
provider SDK is installed). A pool of any other type is left alone: its runs are never claimed, its jobs never judged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pushpool.clock import Clock, SystemClock
from pushpool.errors import UnsupportedPoolError
from pushpool.prefect_api.client import PrefectClient
from pushpool.prefect_api.models import WorkPool
from pushpool.providers import (
    Provider,
    check_served,
    installed_pool_types,
    provider_named,
    provider_running,
)
from pushpool.providers.base import Backend
from pushpool.settings import Settings
from pushpool.usecases.events import EventSink
from pushpool.usecases.finished_runs import FinishedRuns
from pushpool.usecases.metrics import NO_METRICS, MeteredBackend, Metrics, PrefectCallCounter, RunEventMetrics
from pushpool.usecases.pool_reads import PoolReads
from pushpool.usecases.triggers import DelayedTrigger


@dataclass
class Deps:
    settings: Settings
    orchestrator: PrefectClient
    clock: Clock = field(default_factory=SystemClock)
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    pool_types: tuple[str, ...] = ()  # empty: settings.pool_types, else every installed type (__post_init__)
    trigger: DelayedTrigger | None = None  # the runtime's delayed delivery (None: the monitor's sweep alone)
    heartbeats: dict[str, float] = field(default_factory=dict, repr=False)  # pool -> when this process last beat
    _backends: dict[str, Backend] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    pool_reads: PoolReads = field(init=False, repr=False)  # pools, queues, deployments shared briefly (event path)
    finished_runs: FinishedRuns = field(default_factory=FinishedRuns, repr=False)  # the month's, for compute hours
    events: EventSink = field(default_factory=EventSink, repr=False)  # what pushpool did to runs (usecases/events.py)
    metrics: Metrics = field(default=NO_METRICS, repr=False)  # the recorder: none by default (use_metrics)

    def __post_init__(self) -> None:
        backend = self.settings.managed_backend
        self.pool_types = check_served(
            self.pool_types or self.settings.pool_types or installed_pool_types(backend), managed_backend=backend
        )
        self.pool_reads = PoolReads(
            self.orchestrator, self.settings.read_cache_seconds, timer=lambda: self.clock.now().timestamp()
        )
        # The metrics (usecases/metrics.py) read ``self.metrics`` at each count: a recorder set later counts too.
        self.events.add_listener(RunEventMetrics(lambda: self.metrics))
        if isinstance(self.orchestrator, PrefectClient):  # (tests' fake orchestrators make no HTTP calls)
            self.orchestrator.observer = PrefectCallCounter(lambda: self.metrics)

    def use_metrics(self, metrics: Metrics) -> None:
        """Record into ``metrics`` from now on: run events, Prefect API calls, and the backends' calls (those made
        already are wrapped now)."""
        self.metrics = metrics
        if metrics.enabled:
            with self._lock:
                for name, backend in self._backends.items():
                    if not isinstance(backend, MeteredBackend):
                        self._backends[name] = MeteredBackend(backend, lambda: self.metrics, name)

    @classmethod
    def from_settings(cls, settings: Settings, *, orchestrator: PrefectClient | None = None, **kwargs: Any) -> Deps:
        """Dependencies for ``settings``: a client of ``settings.prefect_api_url``, unless ``orchestrator`` is given.

        Raises:
            ConfigurationError: a configured pool type that is unknown, or whose SDK is not installed.
        """
        client = orchestrator
        if client is None:
            client = PrefectClient(
                settings.prefect_api_url,
                api_key=settings.prefect_api_key,
                auth_string=settings.prefect_api_auth_string,
            )
        deps = cls(settings=settings, orchestrator=client, **kwargs)
        served = {deps.provider(pool_type).name: deps.provider(pool_type) for pool_type in deps.pool_types}
        for provider in served.values():  # each provider's own options, from its own settings
            given = deps.backend_options.setdefault(provider.name, {})
            for key, value in provider.backend_options(settings).items():
                given.setdefault(key, value)
        return deps

    def serves(self, pool: WorkPool) -> bool:
        return pool.type in self.pool_types

    def provider(self, pool_type: str) -> Provider:
        """The provider of a pool type this deployment serves.

        Raises:
            UnsupportedPoolError: not a push type, unknown, or not served here (nothing is changed).
        """
        provider = provider_running(pool_type, managed_backend=self.settings.managed_backend)
        if pool_type not in self.pool_types:
            raise UnsupportedPoolError(
                f"pool type {pool_type!r} is not served by this deployment (serves: {', '.join(self.pool_types)})"
            )
        return provider

    def backend(self, name: str) -> Backend:
        """The backend of the provider called ``name``, created on first use (lazy import of its SDK)."""
        with self._lock:
            if name not in self._backends:
                backend = provider_named(name).create_backend(**self.backend_options.get(name, {}))
                # Counted where a recorder is set (serve, the functions); left bare otherwise.
                self._backends[name] = (
                    MeteredBackend(backend, lambda: self.metrics, name) if self.metrics.enabled else backend
                )
            return self._backends[name]

    def backend_for_pool(self, pool: WorkPool) -> Backend:
        """The backend that runs ``pool``'s jobs.

        Raises:
            UnsupportedPoolError: the pool's type is not served here.
            ConfigurationError: its provider cannot be loaded (SDK missing).
        """
        return self.backend(self.provider(pool.type).name)
