"""What differs, for pushpool, between the Prefect 3.x servers it talks to: one table, read once per client.

Prefect's request schemas refuse fields they do not know (HTTP 422, ``extra="forbid"``), so a body written for a new
server fails on an old one. The client reads the server's version once (``GET /admin/version``, lazily, cached) and
shapes the few requests that differ through a :class:`ServerDialect`: it sends only what that server accepts, falls
back where a feature is missing, or refuses with the server's version and what to upgrade to.

Each row of :data:`FEATURES` was measured (a real server of the release before and of the first release with it; see
``make compat-prefect``) or read from that release's source:

* ``automation_tags`` (3.4.7): ``tags`` on an automation and the ``tags`` automation filter. Older servers refuse
  the field; pushpool then keeps its tags in the automation's description (``[tags: a b]``) and reads them back from
  there, so ``work-pool ls`` / ``delete`` find pushpool's automations by name and description on every server.
* ``flow_run_labels`` (3.1.0): run labels and ``PATCH /flow_runs/{id}/labels``. A 3.0 server has neither: pushpool
  keeps its ``pushpool.io/…`` labels as run tags ``key=value`` instead (see :func:`labels_from_tags`).
* ``webhook_json_payload`` (3.4.2): before it, a ``call-webhook`` action posts the rendered payload as a JSON string
  (``"{\"flow_run_id\": …}"``); submit reads the object inside (``entrypoints/http.parse_body``).
* ``bulk_set_state`` (3.6.16): ``POST /flow_runs/bulk_set_state`` (the orchestration rules applied to each run of a
  filter, up to 50 per request, each answered ACCEPT/REJECT/ABORT). The monitor's sweeps claim a page of due runs with
  it, and propose their progress state the same way (``usecases/bulk_dispatch``); older servers get one
  ``set_state`` per run.
* ``pending_substates`` (3.6.22): Pending → Pending transitions (Prefect's ``Submitting``/``InfrastructurePending``).
  Older servers (measured: 3.0.11, 3.4.25) answer pushpool's ``InfrastructurePending`` proposal ABORT "cannot
  transition to a PENDING state" and keep the run Pending. That is harmless: submit reads only the state the answer
  carries (a run cancelled meanwhile comes back Cancelling/Cancelled on every version); the sub-state is just not
  recorded in the run's history.

The User-Agent: pushpool sends ``pushpool/<version> (Prefect server <version>)`` — honest, and not ``prefect/X.Y.Z``:
the server gives clients that do not claim a Prefect version (below 3.4.11, or none) the older behaviour, e.g.
deployment-concurrency leases are kept by the server rather than renewed by the client, which is what pushpool, with no
lease renewal loop, needs on every server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pushpool.errors import OrchestratorError

Version = tuple[int, int, int]

# feature → (first server version with it, what it is)
FEATURES: dict[str, tuple[Version, str]] = {
    "flow_run_labels": ((3, 1, 0), "flow-run labels (PATCH /flow_runs/{id}/labels)"),
    "webhook_json_payload": ((3, 4, 2), "call-webhook actions that post their payload as JSON, not as a JSON string"),
    "automation_tags": ((3, 4, 7), "automation tags"),
    "bulk_set_state": ((3, 6, 16), "POST /flow_runs/bulk_set_state"),
    "pending_substates": ((3, 6, 22), "Pending sub-states named by Prefect's workers"),
}
OLDEST_SUPPORTED: Version = (3, 0, 0)
NEWEST_MEASURED: Version = (3, 9, 1)
_TAGS_IN_DESCRIPTION = re.compile(r"\s*\[tags: ([^\]]*)\]\s*$")


def parse_version(text: str) -> Version:
    """``"3.4.25"`` (or ``"3.9.1.dev3+g…"``, ``"3.0.0rc1"``) → ``(3, 4, 25)``; unparseable → OrchestratorError."""
    found = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not found:
        raise OrchestratorError(f"the Prefect server reports a version pushpool cannot read: {str(text)[:60]!r}")
    return int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)


class UnsupportedServerError(OrchestratorError):
    """The server lacks a feature pushpool needs for this request."""


@dataclass(frozen=True)
class ServerDialect:
    """The request shapes one Prefect server version accepts."""

    version: Version

    @classmethod
    def of(cls, text: str) -> ServerDialect:
        version = parse_version(text)
        if version < OLDEST_SUPPORTED or version[0] != 3:
            raise UnsupportedServerError(
                f"Prefect server {_show(version)} is not supported: pushpool needs a Prefect 3 server "
                f"(measured: {_show(OLDEST_SUPPORTED)} to {_show(NEWEST_MEASURED)})"
            )
        return cls(version)

    @property
    def name(self) -> str:
        return _show(self.version)

    def has(self, feature: str) -> bool:
        return self.version >= FEATURES[feature][0]

    def require(self, feature: str) -> None:
        """Raise, naming the server's version and the release to upgrade to, when the server lacks ``feature``."""
        if not self.has(feature):
            since, what = FEATURES[feature]
            raise UnsupportedServerError(
                f"the Prefect server is {self.name}: {what} needs Prefect {_show(since)} or newer; upgrade the server"
            )

    # -- automations ------------------------------------------------------------------------------------------------

    def automation_out(self, body: dict[str, Any]) -> dict[str, Any]:
        """An automation body as this server accepts it: without ``tags`` before 3.4.7 (kept in the description)."""
        if self.has("automation_tags") or "tags" not in body:
            return body
        out = {k: v for k, v in body.items() if k != "tags"}
        if body["tags"]:
            out["description"] = f"{body.get('description') or ''} [tags: {' '.join(body['tags'])}]".strip()
        return out

    @staticmethod
    def automation_in(automation: dict[str, Any]) -> dict[str, Any]:
        """An automation as the server gave it, with its tags where pushpool reads them (``tags``) on every server."""
        if "tags" in automation:
            return automation
        description = str(automation.get("description") or "")
        found = _TAGS_IN_DESCRIPTION.search(description)
        if not found:
            return {**automation, "tags": []}
        return {**automation, "description": description[: found.start()], "tags": found.group(1).split()}


LABEL_TAG_PREFIX = "pushpool.io/"  # only pushpool's own labels are kept as tags on a server without labels


def labels_to_tags(tags: list[str], labels: dict[str, Any]) -> list[str]:
    """``tags`` with ``labels`` (pushpool's, ``pushpool.io/…``) as ``key=value`` tags, replacing earlier values."""
    for key in labels:
        if not str(key).startswith(LABEL_TAG_PREFIX):
            raise UnsupportedServerError(f"label {key!r}: a server without labels keeps only pushpool.io/ labels")
    kept = [t for t in tags if t.split("=", 1)[0] not in labels]
    return kept + [f"{key}={value}" for key, value in labels.items()]


def labels_from_tags(tags: list[str]) -> dict[str, str]:
    """The ``pushpool.io/…`` labels kept as tags (:func:`labels_to_tags`)."""
    return dict(t.split("=", 1) for t in tags if t.startswith(LABEL_TAG_PREFIX) and "=" in t)


def _show(version: Version) -> str:
    return ".".join(str(part) for part in version)
