"""The Coiled backend keeps the backend contract against the local Coiled REST server (tests/coiled_emulator.py).

The driver plays Coiled's side through the emulator's state: a job ends with an exit code and output, or its cluster
disappears. Locations are Coiled workspaces (another that exists, one that does not).
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from pushpool.providers.base import JobHandle, JobSpec, JobState
from pushpool.providers.coiled.backend import STATE_MAP, CoiledBackend
from pushpool.providers.coiled.config import CoiledJobConfig

from tests.contract.contract import BackendContract, contract_spec


class CoiledDriver:
    supports_locations = True

    def __init__(self, server) -> None:
        self.server = server
        self.workspaces = {"default": None, "other": "other-workspace", "nowhere": "no-such-workspace"}

    def spec(self, *, location: str = "default") -> JobSpec:
        return contract_spec(CoiledJobConfig(workspace=self.workspaces[location]))

    def jobs_of(self, spec: JobSpec) -> int:
        clusters = self.server.clusters_of_attempt(spec.run_id, spec.attempt)
        return sum(1 for j in self.server.jobs.values() if j.cluster_id in {c.id for c in clusters})

    @staticmethod
    def _job_id(handle: JobHandle) -> int:
        return int(handle.id.split("/")[2])

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        self.server.finish(self._job_id(handle), code, lines)

    def vanish(self, handle: JobHandle) -> None:
        self.server.vanish(int(handle.id.split("/")[1]))

    def unknown_handle(self) -> JobHandle:
        return JobHandle("coiled", "pushpool-tests/999999/999999")

    def malformed_handle(self) -> JobHandle:
        return JobHandle("coiled", "not-a-coiled-job")

    def refused_spec(self) -> JobSpec:
        spec = self.spec()
        return dataclasses.replace(spec, config=spec.config.model_copy(update={"vm_types": ("x9.nonexistent",)}))

    def sent(self, handle: JobHandle) -> str:
        return self.server.sent(self._job_id(handle))


@pytest.fixture
def driven(coiled_server):
    coiled_server.run_commands = False
    yield coiled_server
    coiled_server.run_commands = True


class TestCoiledBackend(BackendContract):
    acceptance_time = False  # Coiled's job listing gives no time pushpool relies on: the monitor counts from the claim

    @pytest.fixture
    def backend(self, driven) -> CoiledBackend:
        return CoiledBackend()

    @pytest.fixture
    def driver(self, driven) -> CoiledDriver:
        return CoiledDriver(driven)

    def test_what_was_sent_for_prefect_coiled_s_job_variables(self, backend, driver) -> None:
        spec = driver.spec()
        config = CoiledJobConfig(workspace="other-workspace", image="ghcr.io/me/flows:1", region="us-west-2",
                                 vm_types=["g5.xlarge"], additional_coiled_options={"spot_policy": "on-demand"},
                                 max_run_time_seconds=600)  # fmt: skip
        handle = backend.submit(dataclasses.replace(spec, config=config))
        sent = json.loads(driver.sent(handle))
        assert sent["job"]["user_command"] == "prefect flow-run execute" and sent["job"]["job_timeout_seconds"] == 600
        assert sent["job"]["env_vars"] == {}  # the whole environment is secret, as prefect-coiled's worker sends it
        assert sent["job"]["secret_env_names"] == ["PREFECT_API_KEY", "PREFECT__FLOW_RUN_ID"]
        cluster = sent["cluster"]
        options = {"region_name": "us-west-2", "multizone": True, "multizone_allow_cross_zone": True, "spot": False}
        assert cluster["extra_user_container"] == "ghcr.io/me/flows:1" and cluster["options"] == options
        assert cluster["scheduler_instance_types"] == ["g5.xlarge"] and "spot_policy" not in cluster
        assert cluster["tags"]["pushpool-run"] == spec.run_id and cluster["tags"]["flow-run-id"] == "x"
        assert handle.id.startswith("other-workspace/")

    def test_a_cancelled_job_stops_even_while_its_vm_boots(self, backend, driver) -> None:
        handle = backend.submit(driver.spec())
        backend.cancel(handle)
        assert backend.status([handle])[handle.id].state is JobState.STOPPED

    def test_cpu_and_memory_choose_vm_types_as_the_coiled_sdk_does(self, backend, driver) -> None:
        spec = driver.spec()
        handle = backend.submit(dataclasses.replace(spec, config=CoiledJobConfig(cpu=8, memory="32 GiB")))
        cluster = json.loads(driver.sent(handle))["cluster"]
        assert cluster["scheduler_instance_types"] == cluster["worker_instance_types"] == ["m6i.2xlarge"]

    def test_vm_types_with_cpu_or_an_unknown_option_is_refused_with_the_reason(self, backend, driver) -> None:
        from pushpool.errors import BackendError

        spec = driver.spec()
        with pytest.raises(BackendError, match="either vm_types or cpu/memory"):
            backend.submit(dataclasses.replace(spec, config=CoiledJobConfig(cpu=4, vm_types=["t3.xlarge"])))
        for option in ({"forward_aws_credentials": True}, {"cluster_kwargs": {"name": "x"}}, {"name": "x"}):
            config = CoiledJobConfig(additional_coiled_options=option)
            with pytest.raises(BackendError, match="not supported by coiled:push"):
                backend.submit(dataclasses.replace(spec, config=config))
        assert driver.jobs_of(spec) == 0


def test_every_task_state_coiled_shows_is_mapped() -> None:
    assert set(STATE_MAP) == {"pending", "assigned", "running", "done", "error"}


def test_calls_per_run(driven) -> None:
    """Steady state: a submit straight after the claim is three calls (the image's software environment, as the SDK
    makes it, the job, its cluster); each tick one per run."""
    backend, driver, coiled_server = CoiledBackend(), CoiledDriver(driven), driven
    backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))  # the process's first: + GET /user/me
    before = len(coiled_server.requests)
    handle = backend.submit(dataclasses.replace(driver.spec(), new_attempt=True))
    assert [(m, p.split("/")[3]) for m, p, _ in coiled_server.requests[before:]] == [
        ("POST", "software-environment"), ("POST", "jobs"), ("POST", "clusters")]  # fmt: skip
    before = len(coiled_server.requests)
    backend.status([handle])
    assert len(coiled_server.requests) - before == 1
    backend.cancel(handle)


def test_concurrent_submits_from_the_claim_post_one_job(driven) -> None:
    """Coiled has no idempotency token for a job: within a process, concurrent submits of an attempt are serialised,
    so no job is posted that no cluster will ever run."""
    from concurrent.futures import ThreadPoolExecutor

    backend, spec = CoiledBackend(), dataclasses.replace(CoiledDriver(driven).spec(), new_attempt=True)
    before = len(driven.requests)
    with ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(lambda _: backend.submit(spec), range(8)))) == 1
    assert sum(1 for m, p, _ in driven.requests[before:] if p.endswith("/jobs/compressed")) == 1


def _submitted(backend: CoiledBackend, spec: JobSpec, n: int) -> list[JobHandle]:
    return [backend.submit(dataclasses.replace(spec, run_id=str(uuid.uuid4()), new_attempt=True)) for _ in range(n)]


def _calls(server, before: int) -> list[str]:
    """The calls since ``before``, by kind: the workspace's listing, or a job's own read (its cluster's jobs)."""
    return ["list" if path == "/api/v2/jobs/" else path for _, path, _ in server.callers[before:]]


@pytest.mark.parametrize("n", [5, 50])
def test_a_tick_s_status_lists_the_workspace_and_reads_only_the_jobs_that_changed(driven, n: int) -> None:
    """Over ``n`` in-flight jobs of one workspace, a fresh process's status makes one listing call, whatever ``n``
    (all fit one page); after one finishes and one's cluster vanishes, only those two are read on their own."""
    backend, driver = CoiledBackend(), CoiledDriver(driven)
    handles = _submitted(backend, driver.spec(), n)
    driven.jobs[CoiledDriver._job_id(handles[-1])].state = "running"
    fresh = CoiledBackend()  # a monitor process that never saw the submits
    before = len(driven.callers)
    statuses = fresh.status(handles)
    assert _calls(driven, before) == ["list"]
    assert [statuses[h.id].state for h in handles] == [JobState.PENDING] * (n - 1) + [JobState.RUNNING]
    driver.exit(handles[0], 3, ["boom"])
    driver.vanish(handles[1])
    before = len(driven.callers)
    statuses = fresh.status(handles)
    reads = [f"/api/v2/jobs/cluster/{h.id.split('/')[1]}" for h in handles[:2]]
    assert _calls(driven, before) == ["list", *reads]
    assert statuses[handles[0].id].exit_code == 3 and statuses[handles[1].id].state is JobState.MISSING
    assert all(statuses[h.id].state.is_alive for h in handles[2:])
    for handle in handles[2:]:
        backend.cancel(handle)


def test_the_listing_pages_down_to_the_oldest_job_asked_about_only(driven, monkeypatch) -> None:
    """Pages of the listing (newest first) are asked until every job is found: 7 jobs, pages of 3, the oldest two
    asked about: three pages; the newest two: one page. (One job asked about alone is read on its own.)"""
    from pushpool.providers.coiled import api

    monkeypatch.setattr(api, "PAGE", 3)
    backend, driver = CoiledBackend(), CoiledDriver(driven)
    handles = _submitted(backend, driver.spec(), 7)
    fresh = CoiledBackend()
    before = len(driven.callers)
    assert all(s.state.is_alive for s in fresh.status(handles[:2]).values())
    assert _calls(driven, before) == ["list"] * 3
    before = len(driven.callers)
    assert all(s.state.is_alive for s in fresh.status(handles[-2:]).values())
    assert _calls(driven, before) == ["list"]
    before = len(driven.callers)
    assert fresh.status(handles[:1])[handles[0].id].state.is_alive
    assert _calls(driven, before) == [f"/api/v2/jobs/cluster/{handles[0].id.split('/')[1]}"]
    for handle in handles:
        backend.cancel(handle)


def test_a_job_not_listed_yet_is_read_never_declared_gone(driven) -> None:
    """Coiled's listing may lag behind a create: a job it does not show is read on its own, never taken for gone."""
    backend, driver = CoiledBackend(), CoiledDriver(driven)
    handles = _submitted(backend, driver.spec(), 3)
    driven.bad_days.list_delay = 3600.0
    try:
        before = len(driven.callers)
        statuses = CoiledBackend().status(handles)
    finally:
        driven.bad_days.list_delay = 0.0
    assert all(statuses[h.id].state is JobState.PENDING for h in handles), statuses
    assert _calls(driven, before)[1:] == [f"/api/v2/jobs/cluster/{h.id.split('/')[1]}" for h in handles]
    for handle in handles:
        backend.cancel(handle)


def test_two_tokens_are_never_mixed_in_one_call(driven) -> None:
    """Handles of two accounts in one status call: each token lists its own workspace only (a listing of the other's
    workspace would be refused, and its jobs read one by one)."""
    other = "pushpool-tests-other-account-token"
    driven.add_account(other, "other-user", {"other-user"})
    backend, driver = CoiledBackend(), CoiledDriver(driven)
    mine = _submitted(backend, driver.spec(), 2)
    spec = driver.spec()
    theirs = _submitted(
        backend,
        dataclasses.replace(spec, config=spec.config.model_copy(update={"credentials": {"api_token": other}})),
        2,
    )
    before = len(driven.callers)
    statuses = CoiledBackend().status([*mine, *theirs])
    assert all(s.state is JobState.PENDING for s in statuses.values()) and len(statuses) == 4
    calls = [(path, token) for _, path, token in driven.callers[before:]]
    assert sorted(calls) == sorted([("/api/v2/jobs/", driven.token), ("/api/v2/jobs/", other)])  # one listing each
    for handle in [*mine, *theirs]:
        backend.cancel(handle)
