"""doctor: what a newcomer gets wrong, checked in one go — ``pushpool doctor``.

Each check gives a :class:`Finding`: ``ok``, ``warn`` (works, but look) or ``fail`` (something will not run), what it
saw, and for a failure what to do. The checks, in order:

* **prefect**: the API answers (``/health`` and one authenticated read), and its version (``/admin/version``).
  Unreachable or refused credentials end the Prefect checks there.
* **pins**: Prefect releases known to break with a dependency installed next to them, read in this Python
  environment (where ``prefect server start`` runs when the server is local): fastapi 0.151 or newer crashes Prefect
  3.8.8 at start; SQLAlchemy 2.1 makes Prefect's scheduler fail every loop, so no scheduled run is ever created.
* **scheduler**: a deployment with an active schedule, not paused, last changed more than two scheduler loops ago
  (Prefect's scheduler runs every 60 s and makes runs ahead: at least 3, over at least an hour), has Scheduled runs in
  the future. One that has none means the scheduler service fails or is off (:func:`scheduler_problem`, which
  ``pushpool serve`` also runs).
* **serve**: the ``pushpool serve`` processes recorded under ``PUSHPOOL_HOME`` for this API answer ``/health``.
* per push pool: its **Webhook block and automation** exist (the automation enabled, or disabled because a serve reads
  Prefect's event stream) and call that block; its **webhook** is reachable from where Prefect calls it (a loopback
  URL with a Prefect server elsewhere is not) and from here, and submit accepts the block's **token** — probed with a
  POST of ``{}`` carrying the block's headers: an answer that refuses the body (400/422) means the URL and the token
  are right, 401/403 that the token is not one submit accepts; nothing is submitted;
* per push pool: its **jobs** — the pool's template and each of its deployments' job variables rendered and judged
  as submit judges a run (``usecases/job_check.py``): Prefect creates deployments and edits templates without pushpool,
  so a run submit would refuse (an ARM function pushpool does not evaluate, a field Cloud Run's API does not know, a
  Coiled option it does not support, job variables that change the credentials …) is listed here with the reason;
* per provider in use: its **SDK** is installed and this machine has its **credentials** (for pools without a
  credentials block in their template), through the provider's own ``credentials_problem`` (the registry's hook).

Nothing here changes anything. The webhook's token and URL query (an Azure function key) are never shown.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import httpx

from pushpool.errors import (
    ConfigurationError,
    ObjectNotFoundError,
    OrchestratorAuthError,
    OrchestratorError,
    OrchestratorUnavailableError,
    PushpoolError,
    UnsupportedPoolError,
)
from pushpool.prefect_api.dialect import parse_version
from pushpool.prefect_api.models import StateType, WorkPool
from pushpool.providers import WRAPPERS, Provider, provider_running
from pushpool.tls import default_context
from pushpool.usecases.deps import Deps
from pushpool.usecases.job_check import job_refusal
from pushpool.usecases.pools import pool_parts
from pushpool.usecases.provision import STREAM_TAG

OK, WARN, FAIL = "ok", "warn", "fail"
# Prefect's scheduler loop is 60 s: a deployment changed less than two loops ago may not have its runs yet.
SCHEDULER_GRACE_SECONDS = 150.0
SCHEDULER_MOST_DEPLOYMENTS = 50  # deployments checked (one count each): a large server is sampled, not swept
PROBE_TIMEOUT = 10.0
JOBS_MOST_DEPLOYMENTS = 200  # deployments per pool whose jobs are judged (each: the blocks its job names are read)


@dataclass(frozen=True)
class Finding:
    check: str  # what was checked: "prefect", "scheduler", "pool NAME: webhook" …
    status: str  # ok | warn | fail
    detail: str  # what was seen
    fix: str = ""  # what to do (for warn and fail)

    @property
    def failed(self) -> bool:
        return self.status == FAIL


@dataclass
class Diagnosis:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.failed for f in self.findings)

    def add(self, check: str, status: str, detail: str, fix: str = "") -> None:
        self.findings.append(Finding(check, status, detail, fix))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [asdict(f) for f in self.findings]}


@dataclass(frozen=True)
class ServeInfo:
    """A ``pushpool serve`` this machine runs for the API (from its record under ``PUSHPOOL_HOME``)."""

    pid: int
    address: str
    event_stream: bool


@dataclass(frozen=True)
class ProbeAnswer:
    status: int | None  # None: no answer
    error: str = ""  # why there was none


Probe = Callable[[str, str, Mapping[str, str], bytes], ProbeAnswer]  # method, url, headers, body


def http_probe(method: str, url: str, headers: Mapping[str, str], body: bytes) -> ProbeAnswer:
    """One HTTP request, no retry; the status, or why there was no answer (the exception's type, never its text,
    which may carry the URL's query)."""
    try:
        response = httpx.request(
            method, url, headers=dict(headers), content=body, timeout=PROBE_TIMEOUT, verify=default_context()
        )
    except httpx.HTTPError as exc:
        return ProbeAnswer(None, type(exc).__name__)
    return ProbeAnswer(response.status_code)


# -- pins --------------------------------------------------------------------------------------------------------------

# (package, first bad version, the Prefect versions it breaks (None: every one), what happens, the fix)
KNOWN_BAD_PINS: tuple[tuple[str, tuple[int, int, int], Collection[tuple[int, int, int]] | None, str, str], ...] = (
    ("fastapi", (0, 151, 0), {(3, 8, 8)}, "crashes Prefect {prefect} at start", "pip install 'fastapi<0.151'"),
    (
        "sqlalchemy",
        (2, 1, 0),
        None,
        "makes Prefect's scheduler fail every loop: no scheduled run is ever created",
        "pip install 'sqlalchemy<2.1'",
    ),
)


def installed_versions(packages: Collection[str] = ("prefect", "fastapi", "sqlalchemy")) -> dict[str, str | None]:
    """The versions of ``packages`` installed in this Python environment (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def known_bad_pins(versions: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(problem, fix) for each known-bad combination among ``versions`` (none when Prefect is not installed)."""
    prefect = versions.get("prefect")
    if not prefect:
        return []
    prefect_version = _version(prefect)
    found: list[tuple[str, str]] = []
    for package, first_bad, breaks, what, fix in KNOWN_BAD_PINS:
        installed = versions.get(package)
        if not installed or _version(installed) < first_bad:
            continue
        if breaks is not None and prefect_version not in breaks:
            continue
        found.append((f"{package} {installed} {what.format(prefect=prefect)}", fix))
    return found


def _version(text: str) -> tuple[int, int, int]:
    try:
        return parse_version(text)
    except OrchestratorError:
        return (0, 0, 0)


# -- the scheduler -----------------------------------------------------------------------------------------------------


def scheduler_problem(
    deps: Deps, *, pools: Collection[str] | None = None, grace_seconds: float | None = None
) -> tuple[int, str | None]:
    """(deployments checked, the problem in one line or None): deployments with an active schedule, not paused and
    unchanged for ``grace_seconds`` (:data:`SCHEDULER_GRACE_SECONDS`), that have no Scheduled run in the future —
    Prefect's scheduler makes them ahead, so none means its scheduler service fails (or is off). ``pools``: only
    deployments of these pools."""
    client = deps.orchestrator
    now = deps.clock.now()
    body: dict[str, Any] = {"deployments": {"paused": {"eq_": False}}}
    if pools is not None:
        body["work_pools"] = {"name": {"any_": list(pools)}}
    grace = SCHEDULER_GRACE_SECONDS if grace_seconds is None else grace_seconds
    settled = now - dt.timedelta(seconds=grace)
    scheduled = [
        d
        for d in client.filter_deployments(body)
        if any(s.get("active", True) for s in d.schedules or []) and (d.updated is None or d.updated <= settled)
    ]
    scheduled.sort(key=lambda d: d.updated or now)
    checked = scheduled[:SCHEDULER_MOST_DEPLOYMENTS]
    without: list[str] = []
    for deployment in checked:
        future = {
            "deployment_id": {"any_": [deployment.id]},
            "state": {"type": {"any_": [StateType.SCHEDULED.value]}},
            "expected_start_time": {"after_": now.isoformat()},
        }
        if client.count_flow_runs({"flow_runs": future}) == 0:
            without.append(deployment.name)
    if not without:
        return len(checked), None
    names = ", ".join(repr(n) for n in without[:3]) + (f" and {len(without) - 3} more" if len(without) > 3 else "")
    return len(checked), (
        f"Prefect's scheduler made no runs for {len(without)} of {len(checked)} deployments with an active schedule "
        f"({names}): its scheduler service is failing or off"
    )


def prefect_server_warnings(
    deps: Deps, *, pools: Collection[str] | None = None, versions: Mapping[str, str | None] | None = None
) -> list[str]:
    """What ``pushpool serve`` says of its Prefect server, one line each: known-bad pins in this environment when the
    server is local (it runs from there, most likely), and a failing scheduler (:func:`scheduler_problem`)."""
    lines: list[str] = []
    if _host_kind(deps.settings.prefect_api_url) == "loopback":
        found = known_bad_pins(installed_versions() if versions is None else versions)
        lines += [f"{problem} — {fix} where the Prefect server runs" for problem, fix in found]
    try:
        problem = scheduler_problem(deps, pools=pools)[1]
    except OrchestratorError:
        problem = None  # the monitor's own calls say when Prefect is away
    if problem:
        lines.append(f"{problem} — no scheduled run will start: {SCHEDULER_FIX}")
    return lines


SCHEDULER_FIX = (
    "read the Prefect server's log for scheduler errors; SQLAlchemy 2.1 causes this (pip install 'sqlalchemy<2.1' "
    "where the server runs); PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED must not be false"
)


# -- reachability ------------------------------------------------------------------------------------------------------


def _host_kind(url: str) -> str:
    """``loopback``, ``private``, ``public`` or ``unknown`` (a host name other than localhost)."""
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    if host.endswith("prefect.cloud"):
        return "public"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "unknown"
    if address.is_loopback:
        return "loopback"
    return "private" if address.is_private or address.is_link_local else "public"


def unreachable_from_prefect(webhook_url: str, prefect_api_url: str) -> str | None:
    """Why Prefect (at ``prefect_api_url``) cannot call ``webhook_url``, or None when nothing says it cannot."""
    webhook, prefect = _host_kind(webhook_url), _host_kind(prefect_api_url)
    if webhook == "loopback" and prefect != "loopback":
        return (
            "it is a loopback address and Prefect's server runs elsewhere: Prefect's automation would call its own "
            "machine"
        )
    if webhook == "private" and prefect == "public":
        return "it is a private address and Prefect's server is on the internet: Prefect cannot reach it"
    return None


def shown_url(url: str) -> str:
    """A URL without its query and credentials (an Azure function key travels as ``?code=``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# -- the checks --------------------------------------------------------------------------------------------------------


def diagnose(
    deps: Deps,
    *,
    pools: Collection[str] | None = None,
    serves: Collection[ServeInfo] = (),
    versions: Mapping[str, str | None] | None = None,
    probe: Probe = http_probe,
    scheduler_grace_seconds: float | None = None,
) -> Diagnosis:
    """Every check (see the module's docstring); ``pools``: only these pools (None: every push pool)."""
    result = Diagnosis()
    api = deps.settings.prefect_api_url
    local_prefect = _host_kind(api) == "loopback"
    _check_pins(result, installed_versions() if versions is None else versions, local=local_prefect)
    if not _check_prefect(result, deps):
        return result
    try:
        checked, problem = scheduler_problem(deps, pools=pools, grace_seconds=scheduler_grace_seconds)
    except OrchestratorError as exc:
        result.add("scheduler", WARN, f"could not be checked: {exc.one_line()}")
    else:
        if problem:
            result.add("scheduler", FAIL, problem, SCHEDULER_FIX)
        elif checked:
            result.add("scheduler", OK, f"{checked} deployments with an active schedule have their next runs")
        else:
            result.add("scheduler", OK, "no deployment with an active schedule to check")
    _check_serves(result, serves, probe)
    found = _push_pools(result, deps, pools)
    for pool in found:
        _check_pool(result, deps, pool, serves, probe)
    _check_providers(result, deps, found)
    return result


def _check_pins(result: Diagnosis, versions: Mapping[str, str | None], *, local: bool) -> None:
    bad = known_bad_pins(versions)
    for problem, fix in bad:
        where = "this environment" + (" (the local Prefect server's)" if local else "")
        result.add("pins", FAIL if local else WARN, f"{problem} — installed in {where}", fix)
    if not bad and versions.get("prefect"):
        listed = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        result.add("pins", OK, f"no known-bad combination here ({listed})")


def _check_prefect(result: Diagnosis, deps: Deps) -> bool:
    api = deps.settings.prefect_api_url
    client = deps.orchestrator
    try:
        client.check()
    except OrchestratorAuthError:
        result.add(
            "prefect",
            FAIL,
            f"the Prefect API at {shown_url(api)} refused the credentials",
            "set PREFECT_API_KEY (Prefect Cloud, or a proxy's key) or PREFECT_API_AUTH_STRING (user:password of a "
            "server started with PREFECT_SERVER_API_AUTH_STRING) to what the server accepts",
        )
        return False
    except OrchestratorUnavailableError:
        result.add(
            "prefect",
            FAIL,
            f"no Prefect API answers at {shown_url(api)}",
            "start it (`prefect server start`) or set PREFECT_API_URL to its address, e.g. http://127.0.0.1:4200/api",
        )
        return False
    except OrchestratorError as exc:
        result.add(
            "prefect",
            FAIL,
            exc.one_line(),
            "set PREFECT_API_URL to the API's root, ending in /api (e.g. http://127.0.0.1:4200/api)",
        )
        return False
    try:
        version = client.server_dialect().name
    except OrchestratorError as exc:
        result.add("prefect", FAIL, exc.one_line(), "run a Prefect 3 server")
        return False
    result.add("prefect", OK, f"Prefect {version} at {shown_url(api)}")
    return True


def _check_serves(result: Diagnosis, serves: Collection[ServeInfo], probe: Probe) -> None:
    if not serves:
        result.add(
            "serve",
            WARN,
            "no pushpool serve runs on this machine for this Prefect API",
            "start `pushpool serve` (unless submit runs elsewhere: a cloud function)",
        )
        return
    for serve in serves:
        answer = probe("GET", f"{serve.address}/health", {}, b"")
        if answer.status == 200:
            events = "reads Prefect's event stream" if serve.event_stream else "webhook only"
            result.add("serve", OK, f"pid {serve.pid} answers at {serve.address} ({events})")
        else:
            result.add(
                "serve",
                FAIL,
                f"pid {serve.pid} does not answer at {serve.address}/health ({_why(answer)})",
                "restart `pushpool serve`",
            )


def _push_pools(result: Diagnosis, deps: Deps, names: Collection[str] | None) -> list[WorkPool]:
    if names is None:
        found = [p for p in deps.orchestrator.filter_work_pools() if p.type.endswith(":push") or p.type in WRAPPERS]
        if not found:
            result.add(
                "pools", WARN, "no push pool", "create one: `pushpool work-pool create NAME --type process:push`"
            )
        return found
    pools: list[WorkPool] = []
    for name in names:
        try:
            pools.append(deps.orchestrator.read_work_pool(name))
        except ObjectNotFoundError:
            result.add(
                f"pool {name}", FAIL, "no such work pool", f"create it: `pushpool work-pool create {name} --type TYPE`"
            )
    return pools


def _check_pool(result: Diagnosis, deps: Deps, pool: WorkPool, serves: Collection[ServeInfo], probe: Probe) -> None:
    name = f"pool {pool.name}"
    recreate = f"run `pushpool work-pool create {pool.name} --type {pool.type}` (it adds what is missing)"
    if pool.is_paused:
        result.add(name, WARN, "paused: no run of it starts", f"`prefect work-pool resume {pool.name}`")
    parts = pool_parts(deps, pool.name)
    block = parts.block
    if block is None:
        result.add(
            f"{name}: webhook", FAIL, f"no Webhook block pushpool-{pool.name}: Prefect cannot call submit", recreate
        )
    if not parts.automations:
        result.add(
            f"{name}: automation",
            FAIL,
            f"no automation pushpool-{pool.name}: Prefect does not tell pushpool of its runs (only the monitor's "
            "sweep starts them, up to a tick late; runs created for now wait for it)",
            recreate,
        )
    else:
        _check_automation(result, name, parts.automations[0], block.id if block else None, serves, recreate)
    if block is not None:
        _check_webhook(result, deps, name, block.data, probe, recreate)
    _check_jobs(result, deps, pool)


def _check_jobs(result: Diagnosis, deps: Deps, pool: WorkPool) -> None:
    """The pool's template and its deployments' job variables, judged as submit judges a run (job_check.py): Prefect
    creates deployments and edits templates without pushpool, so what submit would refuse is found here, named."""
    name = f"pool {pool.name}"
    try:
        # a wrapping type's template is pushpool's own, translated per run (a run without a deployment is refused)
        refusal = None if pool.type in WRAPPERS else job_refusal(deps, pool)
        deployments = deps.orchestrator.filter_deployments({"work_pools": {"name": {"any_": [pool.name]}}})
    except OrchestratorError as exc:
        result.add(f"{name}: jobs", WARN, f"could not be checked: {exc.one_line()}")
        return
    if refusal:
        result.add(
            f"{name}: template",
            FAIL,
            f"its runs would be refused: {refusal}",
            f"correct the pool's base job template (`prefect work-pool update {pool.name} --base-job-template ...`)",
        )
    refused: list[str] = []
    for deployment in deployments[:JOBS_MOST_DEPLOYMENTS]:
        try:
            why = job_refusal(deps, pool, deployment)
        except OrchestratorError as exc:
            why = None
            result.add(f"{name}: jobs", WARN, f"deployment {deployment.name} could not be checked: {exc.one_line()}")
        if why and why != refusal:
            refused.append(f"{deployment.name} ({deployment.id}): {why}")
    if refused:
        result.add(
            f"{name}: deployments",
            FAIL,
            f"{len(refused)} deployment(s) whose runs would be refused: " + "; ".join(refused),
            "change their job variables (prefect.yaml `job_variables`, or `prefect deployment` in the UI)",
        )
    elif not refusal:
        checked = min(len(deployments), JOBS_MOST_DEPLOYMENTS)
        result.add(f"{name}: jobs", OK, f"the template and {checked} deployment(s) render jobs submit accepts")


def _check_automation(
    result: Diagnosis,
    name: str,
    automation: dict[str, Any],
    block_id: str | None,
    serves: Collection[ServeInfo],
    recreate: str,
) -> None:
    check = f"{name}: automation"
    calls = [
        str(a.get("block_document_id")) for a in automation.get("actions") or [] if a.get("type") == "call-webhook"
    ]
    if block_id is not None and block_id not in calls:
        result.add(check, FAIL, "it does not call the pool's Webhook block", recreate)
        return
    if automation.get("enabled"):
        result.add(check, OK, "enabled: Prefect calls submit on the pool's flow-run events")
    elif STREAM_TAG in (automation.get("tags") or []):
        if any(s.event_stream for s in serves):
            result.add(check, OK, "disabled: the running serve reads Prefect's event stream instead")
        else:
            result.add(
                check,
                FAIL,
                "disabled for a serve that reads Prefect's event stream, and no such serve runs here",
                "start `pushpool serve`, or re-create the pool with `--events webhook`",
            )
    else:
        result.add(check, FAIL, "disabled: Prefect does not call submit", recreate)


def _check_webhook(
    result: Diagnosis, deps: Deps, name: str, data: Mapping[str, Any], probe: Probe, recreate: str
) -> None:
    url = str(data.get("url") or "")
    shown = shown_url(url)
    if not url:
        result.add(f"{name}: webhook", FAIL, "its Webhook block has no URL", recreate)
        return
    far = unreachable_from_prefect(url, deps.settings.prefect_api_url)
    if far:
        result.add(
            f"{name}: webhook",
            FAIL,
            f"it calls {shown}: {far}",
            "re-create the pool with `--submit-url <an address Prefect's server can reach>`",
        )
    headers = data.get("headers") if isinstance(data.get("headers"), dict) else {}
    headers = {str(k): str(v) for k, v in headers.items()}
    headers["Content-Type"] = "application/json"
    answer = probe(str(data.get("method") or "POST"), url, headers, b"{}")
    if answer.status is None:
        local = _host_kind(url) == "loopback"
        result.add(
            f"{name}: submit",
            FAIL,
            f"nothing answers at {shown} ({answer.error})",
            "start `pushpool serve` (it listens there)" if local else f"deploy submit at {shown}, or {recreate}",
        )
    elif answer.status in (401, 403):
        result.add(
            f"{name}: token",
            FAIL,
            f"submit at {shown} refused the Webhook block's token (HTTP {answer.status})",
            f"{recreate} where the serve runs: it writes that serve's token into the block; or set "
            "PUSHPOOL_WEBHOOK_TOKEN where submit runs to the token the block holds",
        )
    elif answer.status in (400, 422):
        if not far:
            result.add(f"{name}: submit", OK, f"{shown} answers and accepts the block's token")
    else:
        result.add(
            f"{name}: submit",
            FAIL,
            f"{shown} answered HTTP {answer.status} to a submit without a run (expected 400 or 422): it is not "
            "pushpool's submit",
            "re-create the pool with `--submit-url <submit's URL>`",
        )


def _uses_credentials_block(pool: WorkPool) -> bool:
    """Whether the pool's template gives a block (``$ref``) as a variable's default: its jobs' credentials."""
    variables = (pool.base_job_template or {}).get("variables", {}).get("properties", {})
    return any(isinstance(v, dict) and isinstance(v.get("default"), dict) and "$ref" in v["default"]
               for v in variables.values())  # fmt: skip


def _check_providers(result: Diagnosis, deps: Deps, pools: list[WorkPool]) -> None:
    by_provider: dict[str, tuple[Provider, list[WorkPool]]] = {}
    for pool in pools:
        try:
            provider = provider_running(pool.type, managed_backend=deps.settings.managed_backend)
        except (UnsupportedPoolError, ConfigurationError) as exc:
            result.add(f"pool {pool.name}", FAIL, exc.one_line(), "set PUSHPOOL_MANAGED_BACKEND, or delete the pool")
            continue
        by_provider.setdefault(provider.name, (provider, []))[1].append(pool)
    for provider, members in by_provider.values():
        check = f"provider {provider.name}"
        names = ", ".join(p.name for p in members)
        if not provider.installed:
            missing = ", ".join(provider.sdk)
            result.add(check, FAIL, f"its SDK ({missing}) is not installed (pools {names})",
                       f"pip install 'pushpool[{provider.extra}]'")  # fmt: skip
            continue
        if not any(deps.serves(p) for p in members):
            result.add(
                check,
                WARN,
                f"this pushpool does not serve its pools ({names}): PUSHPOOL_POOL_TYPES leaves them out",
                "add their type to PUSHPOOL_POOL_TYPES",
            )
        own = [p.name for p in members if not _uses_credentials_block(p)]
        if not own:
            result.add(check, OK, f"SDK installed; every pool ({names}) has a credentials block")
            continue
        try:
            problem = provider.credentials_problem()
        except PushpoolError as exc:
            problem = (exc.one_line(), f"pip install 'pushpool[{provider.extra}]'")
        except Exception as exc:  # noqa: BLE001 - an SDK's own failure while looking: say which, never crash the doctor
            problem = (f"looking for its credentials failed ({type(exc).__name__})", "check the SDK's configuration")
        if problem:
            result.add(check, FAIL, f"pools {', '.join(own)}: {problem[0]}", problem[1])
        else:
            result.add(check, OK, f"SDK installed, credentials found (pools {names})")


def _why(answer: ProbeAnswer) -> str:
    return f"HTTP {answer.status}" if answer.status is not None else answer.error or "no answer"
