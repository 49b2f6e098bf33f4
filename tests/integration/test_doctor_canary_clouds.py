"""`pushpool doctor --canary` on cloud pools against the local emulators: a serve (in this process, reading Prefect's
event stream) runs the pool; the canary deploys its flow, runs it once and times each stage. The emulators of Modal and
Coiled run the job's real command on this machine (``prefect flow-run execute`` with exactly the environment pushpool
sent), so the flow reaches Completed only if the job pushpool made is enough.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pushpool import localserver
from pushpool.entrypoints.serve import Server
from pushpool.usecases.canary import STAGES, run_canary

from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration


def _pool(request, prefect: PrefectHelper, cloud: str) -> str:
    if cloud == "modal":
        pytest.importorskip("modal")
        request.getfixturevalue("modal_server")
        name = prefect.unique("canary-modal")
        prefect.create_pool(name, "modal:push")
    else:
        request.getfixturevalue("coiled_server")
        name = prefect.unique("canary-coiled")
        prefect.create_pool(name, "coiled:push")
    return name


@pytest.mark.parametrize("cloud", ["modal", "coiled"])
def test_the_canary_completes_on_a_cloud_pool(
    request, cloud: str, prefect_api: str, prefect: PrefectHelper, tmp_path: Path
) -> None:
    pool = _pool(request, prefect, cloud)
    deps = make_deps(prefect_api, tmp_path / "serve")
    server = Server(deps, port=localserver.free_port(), monitor_interval=2, event_stream=True, pool_names=[pool])
    server.start()
    reported: list[str] = []
    lock = threading.Lock()

    def report(stage, result) -> None:
        with lock:
            reported.append(stage.name)

    canary_deps = make_deps(prefect_api, tmp_path / "canary")
    try:
        result = run_canary(canary_deps, pool, timeout=240, cleanup_timeout=60, report=report)
    finally:
        server.stop()
        deps.orchestrator.close()
        canary_deps.orchestrator.close()
    assert result.ok, (result.problem, result.as_dict())
    assert reported == list(STAGES)  # every stage, in order
    seconds = [result.seconds(s) for s in ("run created", "claimed", "job accepted", "flow Running", "Completed")]
    assert None not in seconds and seconds == sorted(seconds), result.as_dict()
    assert prefect.state(result.run_id)[0] == "COMPLETED"
    print(cloud, {s["stage"]: s["seconds"] for s in result.as_dict()["stages"]})
