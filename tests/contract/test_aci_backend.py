"""The ACI backend keeps the backend contract against the local ARM endpoint (tests/arm_emulator.py): the real
azure-mgmt-containerinstance client over TLS, its bearer-token, retry and LRO policies in the path, a fake credential.

The driver plays ACI's control plane through the emulator's commands: a group's container exits with a code and
its log lines, or the group disappears.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from pushpool.providers.aci.backend import AciBackend, resource_id
from pushpool.providers.aci.config import AciJobConfig
from pushpool.providers.base import JobHandle, JobSpec

from tests.conftest import AZ_IDENTITIES, AZ_RG, AZ_RG_OTHER, AZ_SUB
from tests.contract.contract import BackendContract, contract_spec


class AciDriver:
    supports_locations = True

    def __init__(self, arm) -> None:
        self.arm = arm
        self.groups = {"default": AZ_RG, "other": AZ_RG_OTHER, "nowhere": "rg-does-not-exist"}

    def spec(self, *, location: str = "default") -> JobSpec:
        config = AciJobConfig(resource_group_name=self.groups[location], subscription_id=AZ_SUB, image="flows:1")
        return contract_spec(config)

    def jobs_of(self, spec: JobSpec) -> int:
        return self.arm.groups_of(spec.run_id, spec.attempt)

    def exit(self, handle: JobHandle, code: int, lines: list[str]) -> None:
        self.arm.exit(handle.id, code, lines)

    def vanish(self, handle: JobHandle) -> None:
        self.arm.vanish(handle.id)

    def unknown_handle(self) -> JobHandle:
        return JobHandle("aci", resource_id(AZ_SUB, AZ_RG, f"nothing-{uuid.uuid4().hex[:12]}"))

    def malformed_handle(self) -> JobHandle:
        return JobHandle("aci", "not-an-aci-group")

    def refused_spec(self) -> JobSpec:
        spec = self.spec()
        missing = f"{AZ_IDENTITIES}/gone"
        update = {"identities": [missing], "allowed_identities": [missing]}  # allowed here: Azure refuses it
        return dataclasses.replace(spec, config=spec.config.model_copy(update=update))

    def sent(self, handle: JobHandle) -> str:
        """What ACI holds of the group and gives back (its secureValues are never returned)."""
        group = self.arm.group(handle.id)
        key = (group.sub, group.rg.lower(), handle.id.rsplit("/", 1)[-1])
        return json.dumps(self.arm._view(key, group))


class TestAciBackend(BackendContract):
    @pytest.fixture
    def backend(self, aci_options: dict) -> AciBackend:
        self.options = aci_options
        return AciBackend(**aci_options)

    @pytest.fixture
    def driver(self, arm) -> AciDriver:
        return AciDriver(arm)

    def test_no_group_is_ever_put_twice(self, backend: AciBackend, driver: AciDriver, arm) -> None:
        """Concurrent and retried submits of one attempt: one PUT, never a second one (a PUT restarts a group)."""
        from concurrent.futures import ThreadPoolExecutor

        restarts = arm.restarts
        spec = driver.spec()
        with ThreadPoolExecutor(8) as pool:
            assert len(set(pool.map(lambda _: backend.submit(spec), range(8)))) == 1
        assert arm.restarts == restarts
        assert arm.group(backend.find(spec).id).body["tags"]["pushpool-attempt"] == spec.attempt
        puts = arm.count("put")
        backend.submit(dataclasses.replace(spec, new_attempt=True))  # found first: no PUT at all
        assert arm.count("put") == puts

    def test_a_group_created_elsewhere_after_the_look_up_is_not_restarted(
        self, backend: AciBackend, driver: AciDriver, arm, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another submitter (another process) created the group between this one's GET and PUT: the conditional
        PUT (If-None-Match: *) is refused and the existing group's handle returned."""
        spec = driver.spec()
        handle = AciBackend(**self.options).submit(spec)
        restarts = arm.restarts
        monkeypatch.setattr(backend, "_get", lambda *args: None)  # the look-up that raced
        assert backend.submit(spec) == handle
        assert arm.restarts == restarts
