"""The one registry of providers: each entry names its pool types and their base job templates, its backend, its
provisioner, its typed job configuration and the pip extra its SDK comes from — as dotted paths, imported only when
first used (a Lambda for ECS never imports Google, Azure, Modal or Coiled SDKs).

A provider is one folder (``providers/<name>/``: ``backend.py``, ``config.py``, ``template.py``, optionally
``provisioner.py``) plus one entry in :data:`PROVIDERS`; see ``providers/README.md``.

Example:
    >>> provider_for_pool_type("ecs:push").name
    'ecs'
    >>> provider_for_pool_type("process:push").extra is None
    True
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pushpool.errors import ConfigurationError, InvalidRequestError, UnsupportedPoolError
from pushpool.managed import MANAGED_POOL_TYPE, is_managed

if TYPE_CHECKING:
    from pushpool.providers.base import Backend, JobConfig
    from pushpool.providers.provisioning import Provisioner
    from pushpool.settings import Settings


def load(target: str) -> Any:
    """The attribute a registry entry names (``"module:attribute"``), imported now."""
    return _load(target)


def _load(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass(frozen=True)
class Provider:
    """One compute provider: where its parts live (``"module:attribute"``), loaded on first use."""

    name: str
    templates: Mapping[str, str]  # pool type -> function returning its base job template
    backend: str  # the Backend class; built with ``from_options(**options)``
    config: str  # the JobConfig model the rendered template validates into
    provisioner: str | None = None  # the Provisioner class, where the provider has cloud resources to set up
    extra: str | None = None  # ``pip install 'pushpool[<extra>]'`` installs its SDK
    sdk: tuple[str, ...] = ()  # top-level modules that must be importable for the provider to work
    # The function giving this provider's job variables for a managed run (``prefect:managed`` pools, which the
    # operator may have any provider with one serve): ``managed(bootstrap=, env=, image=, memory_mb=) -> dict``.
    managed: str | None = None
    # The provider's own settings: a pydantic model of its environment variables (``PUSHPOOL_...``, read by
    # ``settings.py`` into ``Settings.provider_environ``), and the function giving its backend's options from the
    # settings: ``options(settings) -> dict`` (``Deps`` passes them to ``create_backend``).
    settings: str | None = None
    options: str | None = None
    # What ``pushpool work-pool create`` may pass its provisioner besides region and credentials (``--project``,
    # ``--static-ips``), and the function that turns the CLI's operator-only pool settings (``--allowed-identity``) into
    # literals of the pool's job configuration: ``pool_settings(**values) -> dict`` (raises InvalidRequestError).
    provisioner_options: tuple[str, ...] = ()
    pool_settings: str | None = None
    # ``credentials_problem() -> (problem, fix) | None``: whether this machine has the provider's own credentials (what
    # a pool with no credentials block uses), and what to do when not — ``pushpool doctor`` asks it. None: needs none.
    credentials: str | None = None
    # ``console_url(job_id) -> str | None``: the page of a job in the provider's console (the link from a run to its
    # job, in its submitted event and state message), from the handle id alone, no call. None: the provider has none.
    console_url: str | None = None

    @property
    def pool_types(self) -> tuple[str, ...]:
        return tuple(self.templates)

    @cached_property
    def installed(self) -> bool:
        """Whether the provider's SDK is importable here (checked without importing it)."""
        return all(_findable(module) for module in self.sdk)

    def require_installed(self) -> None:
        """Raises ConfigurationError naming the extra to install when the SDK is missing."""
        if not self.installed:
            missing = ", ".join(m for m in self.sdk if not _findable(m))
            raise ConfigurationError(
                f"pool types {', '.join(self.pool_types)} need {missing}: pip install 'pushpool[{self.extra}]'"
            )

    def template(self, pool_type: str) -> dict[str, Any]:
        return _load(self.templates[pool_type])()  # type: ignore[no-any-return]

    def managed_variables(self, **job: Any) -> dict[str, Any]:
        """Job variables of this provider's template for a managed run (see :attr:`managed`).

        Raises:
            ConfigurationError: the provider cannot serve managed pools.
        """
        if self.managed is None:
            raise ConfigurationError(f"PUSHPOOL_MANAGED_BACKEND: the {self.name} provider cannot run managed pools")
        return _load(self.managed)(**job)  # type: ignore[no-any-return]

    def own_settings(self, settings: Settings) -> Any:
        """This provider's settings (its model, validated from ``settings.provider_environ``); None without a model.

        Raises:
            ConfigurationError: a malformed value, naming its variable.
        """
        if self.settings is None:
            return None
        model = _load(self.settings)
        try:
            return model.model_validate(settings.provider_environ)
        except ValidationError as exc:
            first = exc.errors()[0]
            variable = ".".join(str(part) for part in first.get("loc", ())) or self.name
            message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
            raise ConfigurationError(f"{variable}: {message} (got {first.get('input')!r})") from None

    def backend_options(self, settings: Settings) -> dict[str, Any]:
        """The options this provider's backend is built with, from ``settings`` (empty without an ``options``)."""
        return dict(_load(self.options)(settings)) if self.options is not None else {}

    def pool_settings_literals(self, **values: Any) -> dict[str, Any]:
        """The operator's settings of a pool of this provider, as literals of its job configuration.

        Raises:
            InvalidRequestError: an option this provider does not have, or a malformed value.
        """
        given = {k: v for k, v in values.items() if v}
        if not given:
            return {}
        if self.pool_settings is None:
            raise InvalidRequestError(f"{', '.join(given)}: not a setting of {', '.join(self.pool_types)} pools")
        return dict(_load(self.pool_settings)(**given))

    def credentials_problem(self) -> tuple[str, str] | None:
        """None when this machine has the provider's own credentials (or it needs none); else (what is missing, what
        to do).

        Raises:
            ConfigurationError: the provider's SDK is not installed.
        """
        if self.credentials is None:
            return None
        self.require_installed()
        return _load(self.credentials)()  # type: ignore[no-any-return]

    def job_console_url(self, job_id: str) -> str | None:
        """The page of job ``job_id`` in the provider's console; None when the provider has none or the id is not one
        of its jobs'. Never raises: a link is a courtesy."""
        if self.console_url is None or not job_id:
            return None
        try:
            url = _load(self.console_url)(job_id)
        except Exception:  # noqa: BLE001 - never fail a submit for a link
            return None
        return str(url) if url else None

    def config_model(self) -> type[JobConfig]:
        return _load(self.config)  # type: ignore[no-any-return]

    def create_backend(self, **options: Any) -> Backend:
        """A new backend instance. Raises ConfigurationError when the SDK is not installed."""
        self.require_installed()
        try:
            cls = _load(self.backend)
        except ImportError as exc:
            raise ConfigurationError(f"the {self.name} backend cannot be loaded: {exc}") from exc
        return cls.from_options(**options)  # type: ignore[no-any-return]

    def create_provisioner(self, **options: Any) -> Provisioner:
        if self.provisioner is None:
            raise UnsupportedPoolError(f"pool type {self.pool_types[0]!r} has no cloud infrastructure to provision")
        self.require_installed()
        try:
            cls = _load(self.provisioner)
        except ImportError as exc:
            raise ConfigurationError(f"the {self.name} provisioner cannot be loaded: {exc}") from exc
        return cls(**options)  # type: ignore[no-any-return]


PROVIDERS: tuple[Provider, ...] = (
    Provider(
        name="process",
        templates={"process:push": "pushpool.providers.process.template:base_job_template"},
        backend="pushpool.providers.process.backend:ProcessBackend",
        config="pushpool.providers.process.config:ProcessJobConfig",
        managed="pushpool.providers.process.template:managed_variables",
        options="pushpool.providers.process.options:backend_options",
    ),
    Provider(
        name="ecs",
        templates={"ecs:push": "pushpool.providers.ecs.template:base_job_template"},
        backend="pushpool.providers.ecs.backend:EcsBackend",
        config="pushpool.providers.ecs.config:EcsJobConfig",
        provisioner="pushpool.providers.ecs.provisioner:EcsProvisioner",
        credentials="pushpool.providers.ecs.credentials:credentials_problem",
        console_url="pushpool.providers.ecs.console:console_url",
        managed="pushpool.providers.ecs.template:managed_variables",
        options="pushpool.providers.ecs.options:backend_options",
        provisioner_options=("static_ips",),
        extra="aws",
        sdk=("boto3",),
    ),
    Provider(
        name="aci",
        templates={"azure-container-instance:push": "pushpool.providers.aci.template:base_job_template"},
        backend="pushpool.providers.aci.backend:AciBackend",
        config="pushpool.providers.aci.config:AciJobConfig",
        provisioner="pushpool.providers.aci.provisioner:AciProvisioner",
        pool_settings="pushpool.providers.aci.config:operator_settings",
        credentials="pushpool.providers.aci.credentials:credentials_problem",
        console_url="pushpool.providers.aci.console:console_url",
        extra="azure",
        sdk=("azure.mgmt.containerinstance", "azure.identity"),
    ),
    Provider(
        name="modal",
        templates={"modal:push": "pushpool.providers.modal.template:base_job_template"},
        backend="pushpool.providers.modal.backend:ModalBackend",
        config="pushpool.providers.modal.config:ModalJobConfig",
        provisioner="pushpool.providers.modal.provisioner:ModalProvisioner",
        credentials="pushpool.providers.modal.credentials:credentials_problem",
        console_url="pushpool.providers.modal.console:console_url",
        extra="modal",
        sdk=("modal",),
    ),
    Provider(  # Coiled's REST API with httpx (a core dependency): no SDK to install
        name="coiled",
        templates={"coiled:push": "pushpool.providers.coiled.template:base_job_template"},
        backend="pushpool.providers.coiled.backend:CoiledBackend",
        config="pushpool.providers.coiled.config:CoiledJobConfig",
        provisioner="pushpool.providers.coiled.provisioner:CoiledProvisioner",
        credentials="pushpool.providers.coiled.credentials:credentials_problem",
        console_url="pushpool.providers.coiled.console:console_url",
    ),
    Provider(
        name="cloudrun",
        templates={
            "cloud-run-v2:push": "pushpool.providers.cloudrun.template:cloud_run_v2_template",
            "cloud-run:push": "pushpool.providers.cloudrun.template:cloud_run_template",
        },
        backend="pushpool.providers.cloudrun.backend:CloudRunBackend",
        config="pushpool.providers.cloudrun.config:CloudRunJobConfig",
        provisioner="pushpool.providers.cloudrun.provisioner:CloudRunProvisioner",
        settings="pushpool.providers.cloudrun.options:CloudRunSettings",
        options="pushpool.providers.cloudrun.options:backend_options",
        provisioner_options=("project",),
        credentials="pushpool.providers.cloudrun.credentials:credentials_problem",
        console_url="pushpool.providers.cloudrun.console:console_url",
        extra="gcp",
        sdk=("google.cloud.run_v2",),
    ),
)

# Pool types no provider of their own runs: they wrap the provider the operator chose (``prefect:managed``: the one
# PUSHPOOL_MANAGED_BACKEND names). Each names its hooks (a ``usecases/pool_kind.py`` PoolKind).
WRAPPERS: dict[str, str] = {MANAGED_POOL_TYPE: "pushpool.usecases.managed:ManagedKind"}

_BY_POOL_TYPE: dict[str, Provider] = {t: p for p in PROVIDERS for t in p.pool_types}
POOL_TYPES: tuple[str, ...] = tuple(_BY_POOL_TYPE)


def known_pool_types() -> tuple[str, ...]:
    """Every push pool type the registry knows now (:data:`POOL_TYPES` with those :func:`register` added)."""
    return tuple(_BY_POOL_TYPE)


def register(provider: Provider) -> None:
    """Add ``provider`` to the registry at run time (a provider kept outside this package, e.g. a plugin or a test's):
    the same as one more entry in :data:`PROVIDERS`.

    Raises:
        ConfigurationError: its name or one of its pool types is taken.
    """
    global PROVIDERS, POOL_TYPES
    taken = [t for t in provider.pool_types if t in _BY_POOL_TYPE or t in WRAPPERS]
    if any(p.name == provider.name for p in PROVIDERS) or taken:
        raise ConfigurationError(f"provider {provider.name!r} or its pool types {taken} are already registered")
    PROVIDERS = (*PROVIDERS, provider)
    _BY_POOL_TYPE.update({t: provider for t in provider.pool_types})
    POOL_TYPES = tuple(_BY_POOL_TYPE)


def unregister(name: str) -> None:
    """Take a provider :func:`register` added out of the registry again."""
    global PROVIDERS, POOL_TYPES
    PROVIDERS = tuple(p for p in PROVIDERS if p.name != name)
    for pool_type in [t for t, p in _BY_POOL_TYPE.items() if p.name == name]:
        del _BY_POOL_TYPE[pool_type]
    POOL_TYPES = tuple(_BY_POOL_TYPE)


def provider_for_pool_type(pool_type: str) -> Provider:
    """The provider serving work pools of type ``pool_type``.

    Raises:
        UnsupportedPoolError: not a push pool type, or one no provider of this build knows.
    """
    if not isinstance(pool_type, str) or not pool_type.endswith(":push"):
        raise UnsupportedPoolError(f"work pool type {pool_type!r} is not a push pool type")
    try:
        return _BY_POOL_TYPE[pool_type]
    except KeyError:
        raise UnsupportedPoolError(
            f"unknown push pool type {pool_type!r} (supported: {', '.join(sorted(_BY_POOL_TYPE))})"
        ) from None


def provider_named(name: str) -> Provider:
    for provider in PROVIDERS:
        if provider.name == name:
            return provider
    raise UnsupportedPoolError(f"no provider {name!r} (known: {', '.join(p.name for p in PROVIDERS)})")


def base_job_template(pool_type: str) -> dict[str, Any]:
    """pushpool's base job template for ``pool_type``."""
    return provider_for_pool_type(pool_type).template(pool_type)


def installed_pool_types(managed_backend: str | None = None) -> tuple[str, ...]:
    """The pool types whose provider SDKs are installed here (what a deployment serves by default), with
    ``prefect:managed`` when ``managed_backend`` names an installed provider that can run it."""
    found = tuple(t for p in PROVIDERS if p.installed for t in p.pool_types)
    if managed_backend:
        provider = next((p for p in PROVIDERS if p.name == managed_backend), None)
        if provider is not None and provider.managed and provider.installed:
            found += (MANAGED_POOL_TYPE,)
    return found


def managed_provider(name: str) -> Provider:
    """The provider the operator chose to run ``prefect:managed`` pools (``PUSHPOOL_MANAGED_BACKEND``).

    Raises:
        ConfigurationError: no such provider, or one that cannot run managed pools.
    """
    try:
        provider = provider_named(name)
    except UnsupportedPoolError as exc:
        raise ConfigurationError(f"PUSHPOOL_MANAGED_BACKEND: {exc.one_line()}") from None
    if provider.managed is None:
        able = ", ".join(p.name for p in PROVIDERS if p.managed)
        raise ConfigurationError(f"PUSHPOOL_MANAGED_BACKEND: the {name} provider cannot run managed pools ({able} can)")
    return provider


def provider_running(pool_type: str, *, managed_backend: str) -> Provider:
    """The provider whose backend runs pools of ``pool_type``: its own, or for a wrapping type (:data:`WRAPPERS`) the
    one the operator chose (``managed_backend``).

    Raises:
        UnsupportedPoolError: not a push pool type, or unknown.
        ConfigurationError: the operator's choice cannot run the wrapping type.
    """
    return managed_provider(managed_backend) if is_managed(pool_type) else provider_for_pool_type(pool_type)


def check_served(pool_types: tuple[str, ...], *, managed_backend: str | None = None) -> tuple[str, ...]:
    """Validate a deployment's configured pool types: each known and its SDK installed (``prefect:managed``: the
    provider chosen to run it, ``managed_backend``).

    Raises:
        ConfigurationError: an unknown type, or one whose SDK is missing (named with the extra to install).
    """
    for pool_type in pool_types:
        if is_managed(pool_type):
            managed_provider(managed_backend or "process").require_installed()
            continue
        try:
            provider = provider_for_pool_type(pool_type)
        except UnsupportedPoolError as exc:
            raise ConfigurationError(f"PUSHPOOL_POOL_TYPES: {exc.one_line()}") from None
        provider.require_installed()
    return pool_types


def _findable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a dotted name whose parent package is missing, such as
    ``azure.mgmt.containerinstance`` without ``azure``, makes find_spec raise instead of answering None)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
