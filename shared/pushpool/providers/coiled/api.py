"""Coiled's REST API, called with httpx (no coiled SDK: see backend.py), and its error boundary.

The server is ``DASK_COILED__SERVER`` (the coiled SDK's own setting; https://cloud.coiled.io by default) and the token
goes as ``Authorization: ApiToken <token>``, as the SDK sends it. HTTP errors leave as pushpool errors by status code:
401/403 a refused token, 404 not found, 429/5xx (but 501) and transport errors retried (three attempts, jittered
backoff), then BackendUnavailableError (with Coiled's ``Retry-After``). The token never appears in an error.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Collection
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from pushpool.errors import BackendError, BackendUnavailableError, JobNotFoundError, retry_after_seconds
from pushpool.tls import default_context

NAME = "coiled"
DEFAULT_SERVER = "https://cloud.coiled.io"
NOT_RETRYABLE_5XX = {501}  # Not Implemented: asking again cannot help
PAGE = 100  # jobs per page of a workspace's listing


class _Retry(Exception):
    def __init__(self, error: BackendError) -> None:
        self.error = error


class CoiledApi:
    """One token's view of Coiled; ``sleep`` is injectable so tests do not wait for backoff."""

    def __init__(self, token: str, *, server: str | None = None, attempts: int = 3, timeout: float = 30.0) -> None:
        self.server = (server or os.environ.get("DASK_COILED__SERVER") or DEFAULT_SERVER).rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            timeout=timeout,
            headers={"Authorization": f"ApiToken {token}"},
            verify=default_context(),
        )
        self.attempts = attempts
        self._account: str | None = None
        self._providers: dict[str, str] = {}

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of one call, retried on 429/5xx and transport errors.

        Raises:
            BackendError: Coiled refused the call (its message); JobNotFoundError on 404.
            BackendUnavailableError: still failing after the retries.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(_Retry),
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=0.2, max=5),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, **kwargs)
        except _Retry as exc:
            raise exc.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _Retry(BackendUnavailableError(f"cannot reach Coiled: {type(exc).__name__}", backend=NAME)) from exc
        if response.status_code < 400:
            return response.json() if response.content else None
        reason = _message(response)
        code = response.status_code
        if code == 429 or (code >= 500 and code not in NOT_RETRYABLE_5XX):
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            raise _Retry(
                BackendUnavailableError(f"Coiled is unavailable ({code}): {reason}", backend=NAME, retry_after=wait)
            )
        if response.status_code in (401, 403):
            raise BackendError(f"Coiled refused the API token ({response.status_code}): {reason}", backend=NAME)
        if response.status_code == 404:
            raise JobNotFoundError(f"not found on Coiled: {reason}", backend=NAME)
        raise BackendError(f"Coiled ({response.status_code}): {reason}", backend=NAME)

    # -- the calls pushpool makes ------------------------------------------------------------------------------------

    def account(self) -> str:
        """The token's own account (``GET /api/v2/user/me``, the SDK's first call too); checks the token."""
        if self._account is None:
            me = self.request("GET", "/api/v2/user/me") or {}
            if not me.get("username"):
                raise BackendError("Coiled did not say whose token this is", backend=NAME)
            self._account = str(me["username"])
        return self._account

    def create_job(self, spec: dict[str, Any]) -> int:
        body = gzip.compress(json.dumps(spec).encode())
        return int(self.request("POST", "/api/v2/jobs/compressed", content=body)["id"])

    def provider(self, workspace: str) -> str:
        """The workspace's cloud (``aws``, ``gcp``, ``azure``), as ``Cloud.get_account_provider_name`` reads it."""
        if workspace not in self._providers:
            answer = self.request("GET", f"/api/v1/{workspace}/backend_options/") or {}
            backend = str(answer.get("backend") or "")
            if backend == "vm":
                backend = str((answer.get("options") or {}).get("provider_name") or "")
            self._providers[workspace] = backend.removeprefix("vm_")
        return self._providers[workspace]

    def vm_types(self, params: dict[str, Any]) -> list[str]:
        """The names of Coiled's VM types matching ``params`` (``/api/v1/vm-types/``, every page)."""
        names: list[str] = []
        page = 1
        while True:
            answer = self.request("GET", "/api/v1/vm-types/", params={"page": page, **params}) or {}
            names += [str(r["name"]) for r in answer.get("results") or []]
            if not answer.get("next") or page >= 50:
                return names
            page += 1

    def create_software_environment(self, workspace: str, body: dict[str, Any]) -> None:
        self.request("POST", f"/api/v2/software-environment/account/{workspace}", json=body)

    def create_cluster(self, workspace: str, body: dict[str, Any]) -> tuple[int, bool]:
        answer = self.request("POST", f"/api/v2/clusters/account/{workspace}/", json=body)
        return int(answer["id"]), bool(answer.get("existing"))

    def cluster_by_name(self, workspace: str, name: str) -> int | None:
        try:
            return int(self.request("GET", f"/api/v2/clusters/account/{workspace}/name/{name}")["id"])
        except JobNotFoundError:
            return None

    def jobs_of_cluster(self, cluster_id: int) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/api/v2/jobs/cluster/{cluster_id}") or [])

    def workspace_jobs(self, workspace: str, wanted: Collection[int]) -> dict[int, dict[str, Any]]:
        """The ``wanted`` jobs among the workspace's batch jobs by id, as ``coiled batch list`` lists them
        (``GET /api/v2/jobs/?workspace=&limit=``: ``items``, newest first, and ``count``), page after page (``offset``)
        until all are found, the list ends, or a page reaches jobs older than the oldest wanted (ids only grow)."""
        found: dict[int, dict[str, Any]] = {}
        missing, oldest, offset = set(wanted), min(wanted, default=0), 0
        while missing:
            params = {"workspace": workspace, "limit": PAGE, "offset": offset}
            page = self.request("GET", "/api/v2/jobs/", params=params) or {}
            items = [i for i in page.get("items") or [] if isinstance(i, dict) and str(i.get("id", "")).isdigit()]
            for item in items:
                if int(item["id"]) in missing:
                    found[int(item["id"])] = item
                    missing.discard(int(item["id"]))
            listed = len(page.get("items") or [])
            offset += listed
            total = page.get("count")
            ended = offset >= int(total) if isinstance(total, int) else listed < PAGE
            if not items or ended or min(int(i["id"]) for i in items) < oldest:
                break
        return found

    def stop_cluster(self, workspace: str, cluster_id: int, reason: str) -> None:
        self.request("DELETE", f"/api/v2/clusters/account/{workspace}/id/{cluster_id}", params={"reason": reason})

    def logs(self, workspace: str, cluster_id: int, job_id: int) -> list[str]:
        answer = self.request(
            "GET",
            f"/api/v2/clusters/account/{workspace}/id/{cluster_id}/better-logs",
            params={"filter_pattern": f"__BATCH {job_id}."},
        )
        return [str(event.get("message", "")) for event in (answer or {}).get("events", [])]


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)[:300]
    return str(body)[:300]
