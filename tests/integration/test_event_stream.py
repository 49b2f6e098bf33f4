"""serve's event stream against a real Prefect server: a dropped connection loses no event (issue 14, item 5: a pool
whose automation stays disabled relies on the stream alone)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pushpool.entrypoints.event_stream import EventStream, RunEvent

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration


class HeldStream(EventStream):
    """Reconnects only when the test says so, so that events can happen while it is disconnected."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.may_reconnect = threading.Event()
        self.connections = 0

    def _listen(self) -> None:
        self.connections += 1
        if self.connections > 1:
            self.may_reconnect.wait(30)
        super()._listen()


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_events_that_happen_while_disconnected_are_replayed_on_reconnection(
    prefect: PrefectHelper, pool: str, prefect_api: str, tmp_path: Path
) -> None:
    deps = make_deps(prefect_api, tmp_path)
    seen: list[RunEvent] = []
    stream = HeldStream(deps.settings, seen.append, pool_types={"process:push"})
    stream.start()
    try:
        assert stream.connected.wait(30)
        deployment = prefect.create_deployment(pool)
        before = prefect.create_run(deployment)
        assert _wait(lambda: any(e.run_id == before for e in seen)), seen

        stream.connected.clear()
        stream.connection.close()  # the connection drops; the stream waits to reconnect
        assert _wait(lambda: stream.connections == 2)
        during = prefect.create_run(deployment)  # happens while nobody listens
        time.sleep(0.5)
        assert not any(e.run_id == during for e in seen)
        stream.may_reconnect.set()
        assert stream.connected.wait(30)
        assert _wait(lambda: any(e.run_id == during and e.kind == "submit" for e in seen)), seen
    finally:
        stream.may_reconnect.set()
        stream.stop()
        stream.join(10)
        deps.orchestrator.close()
