"""provision: make a push pool ready to run, idempotently — the pool, the Webhook block and the automation.

How Prefect's flow-run events reach pushpool (``events``): ``"webhook"`` — the automation calls submit's URL for each
event (deployed functions, or a serve without its event stream); ``"stream"`` — a ``pushpool serve`` reads them from
Prefect's event stream, and the automation is kept **disabled** (tagged ``pushpool:events=stream``): each firing of an
automation costs Prefect's database several writes (its bucket, the automation and action events, the webhook's
block read), which measured on SQLite made creating scheduled runs 6-8x slower, while a stream subscriber costs it
nothing. The disabled automation still records the pool's type and points at the serve, so switching back is one
``pushpool work-pool create --events webhook``.

A template whose runs submit would refuse (``usecases/job_check.py``: an ARM function pushpool does not evaluate, a
field Cloud Run's API does not know, Coiled options it does not support, a credentials block of another project …) is
refused with the reason before anything is created or changed.

Run twice with the same inputs, it changes nothing and says so. Variable defaults an operator changed on an existing
pool are kept; everything else in the template is brought up to pushpool's version.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import (
    ConfigurationError,
    InvalidRequestError,
    ObjectNotFoundError,
    OrchestratorError,
    UnsupportedPoolError,
)
from pushpool.prefect_api.models import WorkPool
from pushpool.providers import WRAPPERS, Provider, known_pool_types, provider_for_pool_type
from pushpool.usecases.deps import Deps
from pushpool.usecases.job_check import job_refusal
from pushpool.usecases.pool_kind import pool_kind

TRIGGER_EVENTS = (
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.Late",
    "prefect.flow-run.AwaitingRetry",
    "prefect.flow-run.Cancelling",
)
# Only fields of the event itself: no API look-ups inside Prefect per delivery (those cost the server ~2x).
WEBHOOK_PAYLOAD = json.dumps(
    {
        "flow_run_id": "{{ event.resource.id[17:] }}",
        "event": "{{ event.event }}",
        "event_id": "{{ event.id }}",
        "occurred": "{{ event.occurred }}",
    }
)
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}\Z")


@dataclass
class Change:
    """What provision did (or would do) to one Prefect object."""

    resource: str
    name: str
    action: str  # "created" | "updated" | "unchanged" | "would create" | "would update"
    detail: str = ""


@dataclass
class ProvisionResult:
    pool: str
    steps: list[Change] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(s.action != "unchanged" for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "changed": self.changed,
            "steps": [s.__dict__ for s in self.steps],
        }

    def summary(self) -> str:
        lines = [
            f"{s.resource:<12} {s.name:<40} {s.action}{(' — ' + s.detail) if s.detail else ''}" for s in self.steps
        ]
        if self.dry_run:
            lines.append("dry run: nothing was changed")
        else:
            lines.append("nothing changed" if not self.changed else "done")
        return "\n".join(lines)


def validate_pool_name(name: str) -> str:
    if not isinstance(name, str) or not _POOL_NAME.match(name):
        raise InvalidRequestError(
            f"invalid work pool name {name!r}: use letters, digits, '-', '_' or '.', at most 100 characters"
        )
    if name.lower().startswith("prefect"):
        raise InvalidRequestError(f"work pool names starting with 'prefect' are reserved by Prefect: {name!r}")
    return name


def push_provider(type_name: str) -> Provider:
    """The provider of a push pool type, with the push type suggested for a hybrid one (``process`` →
    ``process:push``).

    Raises:
        UnsupportedPoolError: not a push pool type, or an unknown one.
    """
    if isinstance(type_name, str) and not type_name.endswith(":push") and f"{type_name}:push" in known_pool_types():
        raise UnsupportedPoolError(
            f"work pool type {type_name!r} is not a push pool type: did you mean --type {type_name}:push?"
        )
    return provider_for_pool_type(type_name)


def provision_pool(
    deps: Deps,
    *,
    name: str,
    type_name: str,
    submit_url: str | Callable[[], str] | None = None,
    concurrency_limit: int | None = None,
    dry_run: bool = False,
    defaults: dict[str, Any] | None = None,
    events: str | Callable[[], str] = "webhook",
) -> ProvisionResult:
    """Create or update the pool ``name`` of ``type_name`` and point Prefect at submit (``events``: see above).

    ``submit_url`` may be a function, called once the input is known to be valid (the CLI looks for the running
    ``pushpool serve`` there); without one, ``settings.submit_url`` is used.

    Raises:
        InvalidRequestError: a bad name, an unknown type, an existing pool of another type, a managed pool over the
            workspace's pool limit, or a template whose runs submit would refuse (nothing changed).
        ConfigurationError: no submit URL or webhook token to give Prefect (nothing changed).
    """
    validate_pool_name(name)
    kind = pool_kind(type_name)
    if type_name not in WRAPPERS:
        push_provider(type_name)  # an unknown or non-push type is refused here, before anything changes
    if concurrency_limit is not None and (not isinstance(concurrency_limit, int) or concurrency_limit < 0):
        raise InvalidRequestError(f"concurrency limit must be a whole number ≥ 0, got {concurrency_limit!r}")
    url = (submit_url() if callable(submit_url) else submit_url) or deps.settings.submit_url
    events = events() if callable(events) else events  # decided with the URL (the CLI: by the serve it found)
    if events not in EVENTS:
        raise InvalidRequestError(f"events must be one of {', '.join(EVENTS)}, got {events!r}")
    if not url:
        raise ConfigurationError("no submit URL: set PUSHPOOL_SUBMIT_URL (where Prefect should call pushpool's submit)")
    if not deps.settings.webhook_tokens:
        raise ConfigurationError("PUSHPOOL_WEBHOOK_TOKEN is not set: Prefect needs it to authenticate to submit")
    kind.before_provision(deps, name)  # e.g. the managed workspace's pool limit: one more is refused, nothing changed
    result = ProvisionResult(pool=name, dry_run=dry_run)
    template = kind.template(type_name)
    if defaults:
        from pushpool.providers.provisioning import with_defaults

        template = with_defaults(template, defaults)
    _ensure_pool(deps, result, name, type_name, template, concurrency_limit, dry_run, set(defaults or {}))
    block_id = _ensure_webhook_block(deps, result, f"pushpool-{name}", url, deps.settings.webhook_tokens[0], dry_run)
    _ensure_automation(deps, result, name, type_name, block_id, dry_run, events)
    return result


def _ensure_pool(
    deps: Deps,
    result: ProvisionResult,
    name: str,
    type_name: str,
    template: dict[str, Any],
    concurrency_limit: int | None,
    dry_run: bool,
    override: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    client = deps.orchestrator
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFoundError:
        _check_template(deps, name, type_name, template)
        if not dry_run:
            body: dict[str, Any] = {"name": name, "type": type_name, "base_job_template": template}
            if concurrency_limit is not None:
                body["concurrency_limit"] = concurrency_limit
            client.create_work_pool(body)
        result.steps.append(Change("work pool", name, "would create" if dry_run else "created", type_name))
        return
    if pool.type != type_name:
        raise InvalidRequestError(f"work pool {name!r} exists with type {pool.type!r}, not {type_name!r}")
    operator_fields = pool_kind(type_name).operator_fields(type_name)
    desired = _keep_defaults(template, pool.base_job_template, keep_out=override, operator_fields=operator_fields)
    update: dict[str, Any] = {}
    if desired != pool.base_job_template:
        _check_template(deps, name, type_name, desired)
        update["base_job_template"] = desired
    if concurrency_limit is not None and concurrency_limit != pool.concurrency_limit:
        update["concurrency_limit"] = concurrency_limit
    if not update:
        result.steps.append(Change("work pool", name, "unchanged", type_name))
        return
    if not dry_run:
        client.update_work_pool(name, update)
    result.steps.append(Change("work pool", name, "would update" if dry_run else "updated", ", ".join(sorted(update))))


def _check_template(deps: Deps, name: str, type_name: str, template: dict[str, Any]) -> None:
    """Refuse a template whose jobs submit would refuse (``usecases/job_check.py``), before anything is written.

    Raises:
        InvalidRequestError: the reason (nothing created or changed).
    """
    if type_name in WRAPPERS:  # pushpool's own template, translated per run (usecases/managed.py)
        return
    pool = WorkPool(id="", name=name, type=type_name, base_job_template=template)
    refusal = job_refusal(deps, pool, own_credential=False)
    if refusal:
        raise InvalidRequestError(f"work pool {name!r}: its runs would be refused, so it is not written: {refusal}")


def _keep_defaults(
    template: dict[str, Any],
    existing: dict[str, Any],
    keep_out: set[str] = frozenset(),  # type: ignore[assignment]
    operator_fields: Collection[str] = (),
) -> dict:  # type: ignore[type-arg]
    """``template`` with the variable defaults already set on the existing pool carried over (except ``keep_out``),
    and the operator's own ``job_configuration`` settings (``operator_fields``, e.g. ACI's ``allowed_identities``)."""
    desired = copy.deepcopy(template)
    old = (existing.get("variables") or {}).get("properties") or {}
    for var, spec in (desired.get("variables") or {}).get("properties", {}).items():
        if var in old and "default" in old[var] and var not in keep_out:
            spec["default"] = old[var]["default"]
    old_config, config = existing.get("job_configuration") or {}, desired.get("job_configuration") or {}
    for name in operator_fields:
        if name in old_config and name in config and name not in keep_out:
            config[name] = copy.deepcopy(old_config[name])
    return desired


def _ensure_webhook_block(
    deps: Deps, result: ProvisionResult, block_name: str, url: str, token: str, dry_run: bool
) -> str:
    client = deps.orchestrator
    data = {
        "method": "POST",
        "url": url,
        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        "allow_private_urls": True,
        "verify": True,
    }
    try:
        block = client.read_block_document_by_name("webhook", block_name)
    except ObjectNotFoundError:
        block = None
    if block is None:
        if dry_run:
            result.steps.append(Change("webhook", block_name, "would create", url))
            return ""
        type_id = client.read_block_type_id("webhook")
        schema_id = client.read_latest_block_schema_id(type_id)
        try:
            created = client.create_block_document(
                {"name": block_name, "data": data, "block_type_id": type_id, "block_schema_id": schema_id}
            )
        except OrchestratorError as exc:
            if exc.status_code != 409:
                raise
            created = client.read_block_document_by_name("webhook", block_name)  # a concurrent provision won
        result.steps.append(Change("webhook", block_name, "created", url))
        return created.id
    if {k: block.data.get(k) for k in data} == data:
        result.steps.append(Change("webhook", block_name, "unchanged", url))
    else:
        if not dry_run:
            client.update_block_document(block.id, data)
        result.steps.append(Change("webhook", block_name, "would update" if dry_run else "updated", url))
    return block.id


AUTOMATION_TAG = "pushpool"
TYPE_TAG = "pushpool:type="  # + the pool's type: what a pool deleted behind pushpool's back was
STREAM_TAG = "pushpool:events=stream"  # the automation is disabled: a serve reads the events from Prefect's stream
EVENTS = ("webhook", "stream")


def automation_body(
    pool_name: str, block_id: str, type_name: str | None = None, events: str = "webhook"
) -> dict[str, Any]:
    stream = events == "stream"
    return {
        "name": f"pushpool-{pool_name}",
        "description": f"pushpool: send flow-run events of work pool {pool_name!r} to pushpool's submit function"
        + (" (disabled: pushpool serve reads them from Prefect's event stream)" if stream else ""),
        "enabled": not stream,
        "tags": [AUTOMATION_TAG] + ([TYPE_TAG + type_name] if type_name else []) + ([STREAM_TAG] if stream else []),
        "trigger": {
            "type": "event",
            "posture": "Reactive",
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "match_related": {"prefect.resource.role": "work-pool", "prefect.resource.name": pool_name},
            "expect": list(TRIGGER_EVENTS),
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        },
        "actions": [{"type": "call-webhook", "block_document_id": block_id, "payload": WEBHOOK_PAYLOAD}],
    }


def _same_automation(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    def key(a: dict[str, Any]) -> Any:
        trigger = a.get("trigger") or {}
        actions = [(x.get("type"), str(x.get("block_document_id")), x.get("payload")) for x in a.get("actions") or []]
        return (
            a.get("description"),
            a.get("enabled"),
            sorted(a.get("tags") or []),
            trigger.get("posture"),
            trigger.get("match"),
            trigger.get("match_related"),
            sorted(trigger.get("expect") or []),
            trigger.get("for_each"),
            actions,
        )

    return bool(key(existing) == key(desired))


def _ensure_automation(
    deps: Deps, result: ProvisionResult, pool_name: str, type_name: str, block_id: str, dry_run: bool, events: str
) -> None:
    client = deps.orchestrator
    desired = automation_body(pool_name, block_id, type_name, events)
    detail = "disabled: serve's event stream delivers the events" if events == "stream" else ""
    name = desired["name"]
    found = client.find_automations(name)
    if not found:
        if not dry_run:
            client.create_automation(desired)
        result.steps.append(Change("automation", name, "would create" if dry_run else "created", detail))
        return
    keep, extras = found[0], found[1:]
    for extra in extras:  # a retried create may have left a twin: remove it
        if not dry_run:
            client.delete_automation(str(extra["id"]))
    if _same_automation(keep, desired) and not extras:
        result.steps.append(Change("automation", name, "unchanged", detail))
        return
    if not dry_run:
        client.replace_automation(str(keep["id"]), desired)
    result.steps.append(Change("automation", name, "would update" if dry_run else "updated", detail))
