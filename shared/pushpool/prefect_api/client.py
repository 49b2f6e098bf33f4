"""The Prefect orchestration API client pushpool uses (httpx; no ``prefect`` import at run time).

Every call goes through :meth:`PrefectClient._request`, which

* authenticates with ``Authorization: Bearer <PREFECT_API_KEY>`` or ``Basic base64(<PREFECT_API_AUTH_STRING>)``;
* retries 429/502/503/504 answers and connection errors with capped exponential backoff and full jitter,
  honouring ``Retry-After`` (SQLite-backed servers answer "database is locked" as 503);
* speaks the dialect of the server's version (:mod:`pushpool.prefect_api.dialect`, read once, when a request shape
  differs between versions): automation tags, flow-run labels;
* translates failures into :mod:`pushpool.errors` (404 → ObjectNotFoundError, 401/403 → OrchestratorAuthError,
  exhausted retries → OrchestratorUnavailableError). Messages never carry headers or credentials.

State proposals carry a fresh ``state_details.transition_id`` that stays the same across HTTP retries, so a retried
proposal the server already applied comes back REJECT "already made this state transition" instead of a second
transition (``PreventDuplicateTransitions``); :meth:`propose_state` treats that as the success it is.

Example:
    >>> client = PrefectClient("http://127.0.0.1:4200/api")            # doctest: +SKIP
    >>> result = client.propose_state(run_id, StateType.PENDING)        # doctest: +SKIP
    >>> result.accepted                                                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
from pushpool import __version__
from pushpool.clock import Clock, SystemClock, new_id
from pushpool.errors import (
    ObjectNotFoundError,
    OrchestratorAuthError,
    OrchestratorError,
    OrchestratorUnavailableError,
)
from pushpool.prefect_api.dialect import ServerDialect, labels_from_tags, labels_to_tags
from pushpool.prefect_api.models import (
    BlockDocument,
    Deployment,
    Flow,
    FlowRun,
    OrchestrationResult,
    SetStateStatus,
    StateType,
    WorkPool,
    WorkQueue,
)
from pushpool.tls import default_context
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

log = logging.getLogger("pushpool.prefect_api.client")


class _RetryableAnswer(Exception):
    """A 429/502/503/504 answer, retried like a connection error."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _RetryableAnswer) else type(exc).__name__


def _problem(state: RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome is not None else None
    return _describe(exc) if exc is not None else "?"


RETRY_STATUSES = frozenset({429, 502, 503, 504})
PAGE_SIZE = 200  # the server's maximum `limit`
BULK_LIMIT = 50  # the most runs one bulk_set_state request may name (the server's `limit`, le=50)


class PrefectClient:
    """A small synchronous client for the Prefect REST endpoints pushpool needs.

    Args:
        api_url: the API root, e.g. ``http://127.0.0.1:4200/api``.
        api_key: sent as a Bearer token (Prefect Cloud or a proxy in front of the server).
        auth_string: ``user:password`` for a server started with ``PREFECT_SERVER_API_AUTH_STRING``.
        timeout: seconds per HTTP attempt.
        max_retries: retries after the first attempt for retryable failures.
        transport: an httpx transport (tests, or a fault-injecting proxy).
        clock: used for backoff sleeps.
    """

    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        auth_string: str | None = None,
        timeout: float = 15.0,
        max_retries: int = 6,
        backoff_base: float = 0.1,
        backoff_max: float = 4.0,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        # Honest: pushpool, not ``prefect/X.Y.Z`` — a client that claims no Prefect version gets the server's behaviour
        # for clients that keep no leases (pushpool renews none), on every server version (see dialect.py).
        headers = {"Accept": "application/json", "User-Agent": f"pushpool/{__version__}"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        elif auth_string:
            headers["Authorization"] = "Basic " + base64.b64encode(auth_string.encode()).decode()
        self._http = httpx.Client(
            base_url=self.api_url, headers=headers, timeout=timeout, transport=transport, verify=default_context()
        )
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.clock = clock or SystemClock()
        self.calls = 0  # HTTP requests made (attempts included); read by benchmarks and tests
        # Told of each attempt as (method, route template, status or "transport-error"): the metrics (usecases/metrics).
        self.observer: Callable[[str, str, str], None] | None = None
        self._dialect: ServerDialect | None = None

    # -- plumbing -----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrefectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: RetryCallState) -> float:
        """Full jitter, capped; a server's ``Retry-After`` is honoured (up to four times the cap)."""
        problem = state.outcome.exception() if state.outcome is not None else None
        if isinstance(problem, _RetryableAnswer):
            retry_after = problem.response.headers.get("Retry-After")
            if retry_after:
                try:
                    return min(float(retry_after), self.backoff_max * 4)
                except ValueError:
                    pass
        return float(wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max)(state))

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        what = f"{method} {path}"

        def attempt() -> httpx.Response:
            self.calls += 1
            try:
                response = self._http.request(method, path, json=json, params=params)
            except httpx.TransportError:
                self._observe(method, path, "transport-error")
                raise
            self._observe(method, path, str(response.status_code))
            if response.status_code in RETRY_STATUSES:
                raise _RetryableAnswer(response)
            if response.status_code >= 400:
                raise self._error_for(what, response)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type((httpx.TransportError, _RetryableAnswer)),
            sleep=self.clock.sleep,
            before_sleep=lambda state: log.debug("%s: %s (attempt %d)", what, _problem(state), state.attempt_number),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except (httpx.TransportError, _RetryableAnswer) as exc:
            raise OrchestratorUnavailableError(
                f"Prefect API at {self.api_url} unavailable: {what} failed {self.max_retries + 1} times "
                f"({_describe(exc)})"
            ) from None

    def _observe(self, method: str, path: str, status: str) -> None:
        if self.observer is not None:
            try:
                self.observer(method, route_template(path), status)
            except Exception:  # counting must never fail a call
                log.exception("the Prefect API call observer failed")

    @staticmethod
    def _detail(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:300]
        if isinstance(body, dict):
            refused = _refused_fields(body.get("exception_detail"))
            if refused:  # a 422: which fields the server refused, and why (never the values sent)
                return f"{body.get('exception_message') or 'Invalid request'} {refused}"[:800]
            detail = body.get("detail") or body.get("exception_message") or body
            return str(detail)[:500]
        return str(body)[:500]

    def _error_for(self, what: str, response: httpx.Response) -> OrchestratorError:
        status = response.status_code
        detail = self._detail(response)
        if status in (401, 403):
            return OrchestratorAuthError(
                f"Prefect API refused the credentials for {what} (HTTP {status}): check PREFECT_API_KEY or "
                "PREFECT_API_AUTH_STRING",
                status_code=status,
            )
        if status == 404:
            return ObjectNotFoundError(f"not found: {what}", status_code=status)
        return OrchestratorError(f"{what} failed with HTTP {status}: {detail}", status_code=status)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- health -------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Verify the URL reaches a Prefect API and the credentials are accepted; raise a clear error if not."""
        try:
            self._json("GET", "/health")
        except ObjectNotFoundError as exc:
            raise OrchestratorError(f"{self.api_url} does not look like a Prefect API (GET /health → 404)") from exc
        # /health is unauthenticated on some servers: make one authenticated read as well.
        self._json("POST", "/work_pools/filter", json={"limit": 1})

    def server_dialect(self) -> ServerDialect:
        """The server's version and what its requests look like (``GET /admin/version``, read once per client)."""
        if self._dialect is None:
            self._dialect = ServerDialect.of(str(self._json("GET", "/admin/version")))
        return self._dialect

    # -- flow runs ------------------------------------------------------------------------------------------

    def read_flow_run(self, run_id: str) -> FlowRun:
        return _flow_run(self._json("GET", f"/flow_runs/{run_id}"))

    def filter_flow_runs(self, body: dict[str, Any], *, limit: int | None = None) -> Iterator[FlowRun]:
        """All runs matching ``body`` (a ``/flow_runs/filter`` body), paging 200 at a time."""
        offset = 0
        seen = 0
        while True:
            page_size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - seen)
            if page_size <= 0:
                return
            page = self._json("POST", "/flow_runs/filter", json={**body, "limit": page_size, "offset": offset})
            for item in page:
                yield _flow_run(item)
            seen += len(page)
            if len(page) < page_size:
                return
            offset += len(page)

    def count_flow_runs(self, body: dict[str, Any]) -> int:
        return int(self._json("POST", "/flow_runs/count", json=body))

    def propose_state(
        self,
        run_id: str,
        state_type: StateType,
        *,
        name: str | None = None,
        message: str | None = None,
        force: bool = False,
        state_details: dict[str, Any] | None = None,
        max_wait_seconds: float = 0.0,
    ) -> OrchestrationResult:
        """Propose a state; ACCEPT/REJECT/ABORT come back as they are, WAIT is honoured up to ``max_wait_seconds``.

        A retried HTTP attempt that the server had already applied answers REJECT "already made this state
        transition"; that is reported as ACCEPT, because the transition did happen exactly once.
        """
        waited = 0.0
        while True:
            transition_id = new_id()
            state: dict[str, Any] = {
                "type": state_type.value,
                "state_details": {**(state_details or {}), "transition_id": transition_id},
            }
            if name:
                state["name"] = name
            if message:
                state["message"] = message
            data = self._json("POST", f"/flow_runs/{run_id}/set_state", json={"state": state, "force": force})
            result = OrchestrationResult.model_validate(data)
            if (
                result.status is SetStateStatus.REJECT
                and result.state is not None
                and result.state.state_details.get("transition_id") == transition_id
            ):
                return result.model_copy(update={"status": SetStateStatus.ACCEPT})
            if result.status is SetStateStatus.WAIT:
                delay = float(result.details.get("delay_seconds") or 0)
                if waited + delay <= max_wait_seconds:
                    self.clock.sleep(delay)
                    waited += delay
                    continue
            return result

    def propose_states(
        self,
        run_ids: list[str],
        state_type: StateType,
        *,
        name: str | None = None,
        message: str | None = None,
        from_states: tuple[StateType, ...],
    ) -> dict[str, OrchestrationResult]:
        """Propose one state to many runs (``POST /flow_runs/bulk_set_state``, Prefect 3.6.16+; never forced): the
        server applies its orchestration rules to each run in its own transaction, exactly as ``set_state`` does, and
        answers each run's ACCEPT/REJECT/ABORT. Up to :data:`BULK_LIMIT` runs per request.

        Only runs of ``run_ids`` whose current state's type is in ``from_states`` are proposed to; any other run is
        left untouched and absent from the answer (as is a deleted run). One transition id per request, kept across
        its HTTP retries: a run the lost attempt had moved answers REJECT "already made this state transition" and is
        reported ACCEPT, as :meth:`propose_state` does — ``from_states`` must then include the proposed type (a claim
        proposes Pending from Scheduled *or Pending*; another claimer's Pending run is ABORTed, not taken).

        Raises:
            UnsupportedServerError: the server has no ``bulk_set_state`` (before 3.6.16): propose one by one.
        """
        self.server_dialect().require("bulk_set_state")
        found: dict[str, OrchestrationResult] = {}
        for start in range(0, len(run_ids), BULK_LIMIT):
            chunk = run_ids[start : start + BULK_LIMIT]
            transition_id = new_id()
            state: dict[str, Any] = {"type": state_type.value, "state_details": {"transition_id": transition_id}}
            if name:
                state["name"] = name
            if message:
                state["message"] = message
            body = {
                "flow_runs": {"id": {"any_": chunk}, "state": {"type": {"any_": [s.value for s in from_states]}}},
                "state": state,
                "force": False,
                "limit": len(chunk),
            }
            for item in self._json("POST", "/flow_runs/bulk_set_state", json=body).get("results") or []:
                result = OrchestrationResult.model_validate(item)
                if (
                    result.status is SetStateStatus.REJECT
                    and result.state is not None
                    and result.state.state_details.get("transition_id") == transition_id
                ):
                    result = result.model_copy(update={"status": SetStateStatus.ACCEPT})
                found[str(item.get("flow_run_id"))] = result
        return found

    def set_infrastructure_pid(self, run_id: str, pid: str) -> None:
        self._json("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": pid})

    def set_flow_run_tags(self, run_id: str, tags: list[str]) -> None:
        """Replace the run's tags (Prefect's PATCH sets only the fields given)."""
        self._json("PATCH", f"/flow_runs/{run_id}", json={"tags": tags})

    def update_flow_run_labels(self, run_id: str, labels: dict[str, Any]) -> None:
        """Merge ``labels`` into the run's labels; a server without labels (3.0) keeps them as ``key=value`` tags."""
        if self.server_dialect().has("flow_run_labels"):
            self._json("PATCH", f"/flow_runs/{run_id}/labels", json=labels)
            return
        tags = list(self._json("GET", f"/flow_runs/{run_id}").get("tags") or [])
        self.set_flow_run_tags(run_id, labels_to_tags(tags, labels))

    def read_flow_run_states(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._json("GET", "/flow_run_states/", params={"flow_run_id": run_id}))

    def create_logs(self, records: list[dict[str, Any]]) -> None:
        if records:
            self._json("POST", "/logs/", json=records)

    def read_logs(self, run_id: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The run's log records, oldest first (every page, or the last ``limit``)."""
        records: list[dict[str, Any]] = []
        sort = "TIMESTAMP_ASC" if limit is None else "TIMESTAMP_DESC"
        while limit is None or len(records) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(records))
            body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": sort, "limit": size, "offset": len(records)}
            page = self._json("POST", "/logs/filter", json=body)
            records.extend(page)
            if len(page) < size:
                break
        return records if limit is None else records[::-1]

    # -- deployments, flows, variables ------------------------------------------------------------------------

    def read_deployment(self, deployment_id: str) -> Deployment:
        return Deployment.model_validate(self._json("GET", f"/deployments/{deployment_id}"))

    def filter_deployments(self, body: dict[str, Any]) -> list[Deployment]:
        """Every deployment matching ``body`` (a ``/deployments/filter`` body), paging 200 at a time."""
        found: list[Deployment] = []
        while True:
            page = self._json("POST", "/deployments/filter", json={**body, "limit": PAGE_SIZE, "offset": len(found)})
            found.extend(Deployment.model_validate(d) for d in page)
            if len(page) < PAGE_SIZE:
                return found

    def create_flow(self, name: str) -> Flow:
        """The flow called ``name`` (created, or the existing one: the server upserts by name)."""
        return Flow.model_validate(self._json("POST", "/flows/", json={"name": name}))

    def create_deployment(self, body: dict[str, Any]) -> Deployment:
        """Create (or update: the server upserts by flow and name) a deployment from a ``POST /deployments/`` body."""
        return Deployment.model_validate(self._json("POST", "/deployments/", json=body))

    def delete_deployment(self, deployment_id: str) -> None:
        """Delete a deployment (the server deletes its Scheduled runs with it)."""
        self._json("DELETE", f"/deployments/{deployment_id}")

    def create_flow_run(self, deployment_id: str, body: dict[str, Any]) -> FlowRun:
        """A new run of the deployment (``POST /deployments/{id}/create_flow_run``; Scheduled now by default)."""
        return _flow_run(self._json("POST", f"/deployments/{deployment_id}/create_flow_run", json=body))

    def read_flow(self, flow_id: str) -> Flow:
        return Flow.model_validate(self._json("GET", f"/flows/{flow_id}"))

    def read_variable(self, name: str) -> Any:
        """The value of a Prefect variable (ObjectNotFoundError when there is no such variable)."""
        data = self._json("GET", f"/variables/name/{name}")
        return data.get("value") if isinstance(data, dict) else None

    # -- work pools and queues ----------------------------------------------------------------------------------

    def write_variable(self, name: str, value: Any) -> None:
        """Create or update the variable ``name`` (a JSON value)."""
        try:
            self._json("PATCH", f"/variables/name/{quote(name, safe='')}", json={"value": value})
        except ObjectNotFoundError:
            try:
                self._json("POST", "/variables/", json={"name": name, "value": value})
            except OrchestratorError as exc:
                if exc.status_code != 409:  # created meanwhile: the next write updates it
                    raise

    def read_work_pool(self, name: str) -> WorkPool:
        return WorkPool.model_validate(self._json("GET", f"/work_pools/{name}"))

    def heartbeat_worker(self, pool_name: str, worker_name: str, interval_seconds: float) -> None:
        """Report ``worker_name`` alive in ``pool_name``: Prefect shows the pool Ready while heartbeats keep coming
        (its foreman marks the worker offline after three intervals without one, and the pool Not Ready)."""
        body = {"name": worker_name, "heartbeat_interval_seconds": max(1, round(interval_seconds))}
        self._json("POST", f"/work_pools/{pool_name}/workers/heartbeat", json=body)

    def delete_worker(self, pool_name: str, worker_name: str) -> None:
        """Remove ``worker_name`` from ``pool_name`` (a pool with no worker online shows Not Ready)."""
        self._json("DELETE", f"/work_pools/{pool_name}/workers/{quote(worker_name, safe='')}")

    def filter_work_pools(self) -> list[WorkPool]:
        pools: list[WorkPool] = []
        offset = 0
        while True:
            page = self._json("POST", "/work_pools/filter", json={"limit": PAGE_SIZE, "offset": offset})
            pools.extend(WorkPool.model_validate(p) for p in page)
            if len(page) < PAGE_SIZE:
                return pools
            offset += len(page)

    def create_work_pool(self, body: dict[str, Any]) -> WorkPool:
        return WorkPool.model_validate(self._json("POST", "/work_pools/", json=body))

    def update_work_pool(self, name: str, body: dict[str, Any]) -> None:
        self._json("PATCH", f"/work_pools/{name}", json=body)

    def delete_work_pool(self, name: str) -> None:
        self._json("DELETE", f"/work_pools/{name}")

    def read_work_queue(self, pool_name: str, queue_name: str) -> WorkQueue:
        return WorkQueue.model_validate(self._json("GET", f"/work_pools/{pool_name}/queues/{queue_name}"))

    def read_work_queues(self, pool_name: str) -> list[WorkQueue]:
        data = self._json("POST", f"/work_pools/{pool_name}/queues/filter", json={"limit": PAGE_SIZE})
        return [WorkQueue.model_validate(q) for q in data]

    def get_scheduled_flow_runs(
        self,
        pool_name: str,
        *,
        scheduled_before: str | None = None,
        work_queue_names: list[str] | None = None,
        limit: int = PAGE_SIZE,
    ) -> list[FlowRun]:
        """Due runs of a pool as Prefect's own workers see them: pause flags and concurrency limits applied."""
        body: dict[str, Any] = {"limit": limit}
        if scheduled_before:
            body["scheduled_before"] = scheduled_before
        if work_queue_names:
            body["work_queue_names"] = work_queue_names
        data = self._json("POST", f"/work_pools/{pool_name}/get_scheduled_flow_runs", json=body)
        return [_flow_run(item["flow_run"]) for item in data]

    # -- blocks ----------------------------------------------------------------------------------------------

    def read_block_type_id(self, slug: str) -> str:
        return str(self._json("GET", f"/block_types/slug/{slug}")["id"])

    def read_latest_block_schema_id(self, block_type_id: str) -> str:
        data = self._json(
            "POST",
            "/block_schemas/filter",
            json={"block_schemas": {"block_type_id": {"any_": [block_type_id]}}, "limit": 1},
        )
        if not data:
            raise ObjectNotFoundError(f"no block schema for block type {block_type_id}")
        return str(data[0]["id"])

    def create_block_type(self, body: dict[str, Any]) -> str:
        """Register a block type (name, slug, description …); its id."""
        return str(self._json("POST", "/block_types/", json=body)["id"])

    def create_block_schema(self, body: dict[str, Any]) -> str:
        """Register a block schema (fields, block_type_id, capabilities); its id."""
        return str(self._json("POST", "/block_schemas/", json=body)["id"])

    def read_block_document(self, block_document_id: str) -> BlockDocument:
        data = self._json("GET", f"/block_documents/{block_document_id}", params={"include_secrets": "true"})
        return BlockDocument.model_validate(data)

    def read_block_document_by_name(self, block_type_slug: str, name: str) -> BlockDocument:
        data = self._json(
            "GET",
            f"/block_types/slug/{block_type_slug}/block_documents/name/{name}",
            params={"include_secrets": "true"},
        )
        return BlockDocument.model_validate(data)

    def create_block_document(self, body: dict[str, Any]) -> BlockDocument:
        return BlockDocument.model_validate(self._json("POST", "/block_documents/", json=body))

    def update_block_document(self, block_document_id: str, data: dict[str, Any]) -> None:
        self._json("PATCH", f"/block_documents/{block_document_id}", json={"data": data, "merge_existing_data": False})

    def delete_block_document(self, block_document_id: str) -> None:
        self._json("DELETE", f"/block_documents/{block_document_id}")

    # -- events -------------------------------------------------------------------------------------------------

    def emit_events(self, events: list[dict[str, Any]], *, timeout: float = 5.0) -> None:
        """Record a batch of events (``POST /events``, on every Prefect 3 server). One attempt with ``timeout``, never
        retried here: the caller (usecases/event_publisher.py) keeps what was not delivered for its next flush.

        Raises:
            OrchestratorUnavailableError: Prefect could not be reached, timed out, or answered 429/5xx.
            OrchestratorError: Prefect refused the batch (4xx).
        """
        self.calls += 1
        try:
            response = self._http.post("/events", json=events, timeout=timeout)
        except httpx.TransportError as exc:
            raise OrchestratorUnavailableError(
                f"Prefect API at {self.api_url} unavailable: POST /events failed ({_describe(exc)})"
            ) from None
        if response.status_code in RETRY_STATUSES or response.status_code >= 500:
            raise OrchestratorUnavailableError(
                f"Prefect API at {self.api_url} unavailable: POST /events answered HTTP {response.status_code}",
                status_code=response.status_code,
            )
        if response.status_code >= 400:
            raise self._error_for("POST /events", response)

    def read_events(self, event_filter: dict[str, Any], *, max_pages: int = 20) -> list[dict[str, Any]]:
        """Stored events matching ``event_filter`` (Prefect's EventFilter), oldest pages first as Prefect gives them."""
        page = self._json("POST", "/events/filter", json={"filter": event_filter, "limit": 50})
        found = list(page.get("events") or [])
        for _ in range(max_pages - 1):
            next_page = page.get("next_page")
            if not next_page:
                break
            page = self._json("GET", "/events/filter/next", params={"page-token": _page_token(next_page)})
            found.extend(page.get("events") or [])
        return found

    # -- automations --------------------------------------------------------------------------------------------

    def read_automations(self) -> list[dict[str, Any]]:
        """Every automation, by name."""
        found: list[dict[str, Any]] = []
        while True:
            page = self._json("POST", "/automations/filter", json={"limit": PAGE_SIZE, "offset": len(found)})
            found.extend(_automation(a) for a in page)
            if len(page) < PAGE_SIZE:
                return found

    def find_automations(self, name: str) -> list[dict[str, Any]]:
        data = self._json("POST", "/automations/filter", json={"automations": {"name": {"any_": [name]}}, "limit": 50})
        return [_automation(a) for a in data if a.get("name") == name]

    def create_automation(self, body: dict[str, Any]) -> str:
        return str(self._json("POST", "/automations/", json=self.server_dialect().automation_out(body))["id"])

    def replace_automation(self, automation_id: str, body: dict[str, Any]) -> None:
        self._json("PUT", f"/automations/{automation_id}", json=self.server_dialect().automation_out(body))

    def delete_automation(self, automation_id: str) -> None:
        self._json("DELETE", f"/automations/{automation_id}")


# Every fixed segment of the paths this client calls: any other segment is an id or a name (a run's id, a pool's or a
# variable's name) and becomes ``{id}`` in :func:`route_template`, so a metric labelled by route has as many series
# as this client has routes, whatever the names and ids.
ROUTE_SEGMENTS = frozenset(
    {
        "admin",
        "automations",
        "block_documents",
        "block_schemas",
        "block_types",
        "bulk_set_state",
        "count",
        "create_flow_run",
        "deployments",
        "events",
        "filter",
        "flow_run_states",
        "flow_runs",
        "flows",
        "get_scheduled_flow_runs",
        "health",
        "heartbeat",
        "labels",
        "logs",
        "name",
        "next",
        "queues",
        "set_state",
        "slug",
        "variables",
        "version",
        "work_pools",
        "workers",
    }
)


def route_template(path: str) -> str:
    """The route of ``path``, ids and names replaced by ``{id}`` (its query dropped).

    Example:
        >>> route_template("/flow_runs/0b6c6a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b/set_state")
        '/flow_runs/{id}/set_state'
        >>> route_template("/work_pools/my-pool/queues/filter")
        '/work_pools/{id}/queues/filter'
    """
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    return "/" + "/".join(s if s in ROUTE_SEGMENTS else "{id}" for s in segments)


def _flow_run(item: dict[str, Any]) -> FlowRun:
    """A run as the server gave it; a server without labels (3.0) gives none: pushpool's are kept in its tags."""
    if isinstance(item, dict) and "labels" not in item:
        item = {**item, "labels": labels_from_tags(list(item.get("tags") or []))}
    return FlowRun.model_validate(item)


def _automation(item: dict[str, Any]) -> dict[str, Any]:
    """An automation with ``tags`` on every server (before 3.4.7 they are kept in its description)."""
    return ServerDialect.automation_in(item)  # type: ignore[arg-type]


def _page_token(next_page: str) -> str:
    from urllib.parse import parse_qs, urlparse

    return parse_qs(urlparse(next_page).query).get("page-token", [""])[0]


def _refused_fields(errors: Any, *, most: int = 6) -> str:
    """Prefect's 422 ``exception_detail`` (pydantic's errors) as ``field: reason`` items: what the server refused.

    Only each error's location and message are kept — never its ``input`` (the value sent, which may be a secret: a
    Webhook block's token) nor the echoed ``request_body``. A refused unknown field (``extra_forbidden``, what an older
    server says of a field it does not know) comes first; the names of the union branches Prefect tried are dropped.
    """
    if not isinstance(errors, list):
        return ""
    items = sorted((e for e in errors if isinstance(e, dict)), key=lambda e: e.get("type") != "extra_forbidden")
    seen: list[str] = []
    for error in items:
        loc = [str(part) for part in error.get("loc") or () if part != "body" and "[" not in str(part)]
        text = f"{'.'.join(loc) or '(body)'}: {' '.join(str(error.get('msg') or error.get('type') or '').split())}"
        if text not in seen:
            seen.append(text)
    more = f" (+{len(seen) - most} more)" if len(seen) > most else ""
    return "(" + "; ".join(seen[:most]) + more + ")" if seen else ""
