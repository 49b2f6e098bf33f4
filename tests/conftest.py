"""Shared fixtures: a real Prefect server on 127.0.0.1, settings and dependencies pointed at it.

The server is started once per session (SQLite, its own PREFECT_HOME, late-runs service off) and stopped by pid.
Under pytest-xdist (``make test`` runs ``-n 4 --dist loadfile``) a session is one worker: every worker has its own
server, emulators, PREFECT_HOME, PUSHPOOL_HOME and temporary directories, and a file's tests stay on one worker in
file order, so a test that ticks the whole server or owns its managed workspace shares it with no concurrent test.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import boto3
import pytest
from pushpool import localserver
from pushpool.providers import base_job_template

from tests.helpers import MIGRATED_DB, PrefectHelper, make_deps, server_python, snapshot_database, start_server

ROOT = Path(__file__).resolve().parents[1]
FLOWS_DIR = ROOT / "tests" / "flows"

# The files that take longest, longest first (seconds of one make test on 4 workers: the mean of two runs on
# 2026-12-07, a day this machine ran about 1.5 times slower than on 2026-12-06; only the order matters). Under
# pytest-xdist (--dist loadfile --no-loadscope-reorder) a worker takes the next file in collection order when it
# finishes one, so a long file collected late is the suite's tail: one run spent its last 65 s on test_every_provider
# alone. Every other file follows in collection order (the unit tests last: short files that fill the workers' ends).
# Re-measure with ``--durations`` when a file grows; a name that no longer exists is ignored.
LONGEST_FIRST = (
    "tests/integration/test_cli_pools.py",  # 218 s
    "tests/integration/test_managed.py",  # 208 s
    "tests/integration/test_push_path.py",  # 139 s
    "tests/e2e/test_demo.py",  # 131 s
    "tests/reliability/test_every_provider.py",  # 125 s
    "tests/integration/test_doctor_canary_clouds.py",  # 122 s
    "tests/integration/test_provision_ecs.py",  # 116 s
    "tests/integration/test_functions.py",  # 107 s
    "tests/integration/test_doctor.py",  # 87 s
    "tests/security/test_pool_credentials.py",  # 82 s
    "tests/contract/test_orchestration_contract.py",  # 78 s
    "tests/e2e/test_scheduled_deployment.py",  # 76 s
    "tests/integration/test_aci.py",  # 76 s
    "tests/contract/test_delayed_triggers.py",  # 73 s
    "tests/integration/test_ecs.py",  # 73 s
    "tests/integration/test_serve_webhook.py",  # 63 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: file order kept


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("prefect-home")
    # Jobs started by the process backend inherit this environment: keep them off the real home directory.
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # Prefect's own cancelling timeout (300 s, then Cancelled) is not what any test relies on — pushpool's monitor
    # finishes cancellations —, and on the shared SQLite server its per-run docket tasks for the runs tests leave
    # Cancelling were retried hundreds of times in a full run while it was locked (its servers inherit this).
    os.environ["PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_ENABLED"] = "false"
    os.environ["PUSHPOOL_HOME"] = str(home / "pushpool")
    # A monitor (serve) ticking over the shared server also meets Cloud Run pools other tests left runs in: with no
    # credentials injected, Application Default Credentials must not probe Google's metadata server, nor read the image
    # platforms from a registry.
    os.environ["NO_GCE_CHECK"] = "True"
    os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(home / "no-google-credentials.json")
    os.environ["PUSHPOOL_IMAGE_PLATFORM_CHECK"] = "false"
    return home


@pytest.fixture(scope="session")
def session_server(session_home: Path) -> localserver.LocalPrefectServer:
    # A database as a fresh server leaves it (migrated, nothing of any test's in it), made once per .venv-server by
    # ``make test`` (tests/migrated_db.py): from a copy a server starts on ~4 s of CPU, where the migrations of a new
    # database cost ~12 s, and every worker starts its server at the same moment. Without it (a plain ``pytest``),
    # this worker's server migrates a new database and the copy is taken from it.
    seed, made = session_home / MIGRATED_DB, os.environ.get("PUSHPOOL_TEST_MIGRATED_DB")
    if made and Path(made).is_file():
        shutil.copyfile(made, seed)
    # localserver.start takes another free port if one is taken between its probe and the server's bind.
    home = session_home / "server"
    server = start_server(home, seed) if seed.is_file() else localserver.start(home, python=server_python())
    if not seed.is_file():
        # The servers tests start of their own begin from a copy (start_server), not every migration again.
        snapshot_database(server.home, seed)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prefect_api(session_server: localserver.LocalPrefectServer) -> str:
    return session_server.api_url


@pytest.fixture(scope="session")
def migrated_db(session_server: localserver.LocalPrefectServer, session_home: Path) -> Path:
    """A database as a fresh server leaves it, migrated and empty: for ``tests.helpers.start_server``."""
    return session_home / MIGRATED_DB


@pytest.fixture
def own_server(tmp_path: Path, migrated_db: Path):
    """The API URL of a Prefect server of the test's own (from the migrated copy, ~4 s): for a test that loads a
    server heavily, or whose monitor ticks every pool of its server, which on the shared one other tests fill."""
    server = start_server(tmp_path / "own-server", migrated_db)
    yield server.api_url
    server.stop()


@pytest.fixture
def prefect(prefect_api: str) -> PrefectHelper:
    helper = PrefectHelper(prefect_api, FLOWS_DIR)
    yield helper
    helper.close()


@pytest.fixture
def deps(prefect_api: str, tmp_path: Path):
    """Dependencies pointed at the session's server, with short monitor timeouts and a private job directory."""
    d = make_deps(prefect_api, tmp_path)
    yield d
    d.orchestrator.close()


@pytest.fixture
def pool(prefect: PrefectHelper) -> str:
    """A fresh process:push pool."""
    name = prefect.unique("pp")
    prefect.create_pool(name)
    return name


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """moto in server mode on 127.0.0.1, reached over real HTTP with dummy credentials (no metadata probes)."""
    from pushpool.localserver import free_port

    from tests.emulators import MotoServer

    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"  # AmazonECSTaskExecutionRolePolicy must be attachable
    server = MotoServer(free_port()).start()
    url = server.url
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    os.environ.pop("AWS_PROFILE", None)
    yield url
    server.stop()


@pytest.fixture(scope="session")
def aws(moto_endpoint: str) -> dict:
    ecs = boto3.client("ecs")
    ec2 = boto3.client("ec2")
    cluster = ecs.create_cluster(clusterName="pushpool-test")["cluster"]["clusterName"]
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    group = ec2.create_security_group(GroupName="pushpool-test", Description="tests", VpcId=vpc)["GroupId"]
    return {"cluster": cluster, "subnets": subnets[:2], "security_group": group, "ecs": ecs}


@pytest.fixture
def ecs_pool(prefect: PrefectHelper, aws: dict) -> str:
    template = copy.deepcopy(base_job_template("ecs:push"))
    props = template["variables"]["properties"]
    props["cluster"]["default"] = aws["cluster"]
    props["network_configuration"]["default"] = {
        "subnets": aws["subnets"],
        "securityGroups": [aws["security_group"]],
        "assignPublicIp": "ENABLED",
    }
    # moto workaround: it cannot place a Fargate task whose memory is set at task level only.
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["memoryReservation"] = 512
    name = prefect.unique("ecs")
    prefect.create_pool(name, "ecs:push", base_job_template=template)
    return name


# -- Azure: a local ARM endpoint over TLS (tests/arm_emulator.py) -------------------------------------------------

AZ_SUB = "00000000-0000-0000-0000-0000000000a1"
AZ_RG, AZ_RG_OTHER = "rg-pushpool", "rg-pushpool-other"
AZ_IDENTITIES = (
    f"/subscriptions/{AZ_SUB}/resourceGroups/{AZ_RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
)
AZ_IDENTITY = f"{AZ_IDENTITIES}/pushpool-aci"
AZ_REGISTRY = "pushpooltest.azurecr.io"


@pytest.fixture(scope="session")
def arm(tmp_path_factory: pytest.TempPathFactory):
    """The ARM emulator on 127.0.0.1 over TLS, with two resource groups, one identity and one registry it may pull."""
    from tests.arm_emulator import ArmEmulator

    emulator = ArmEmulator(tmp_path_factory.mktemp("arm")).start()
    emulator.add_resource_group(AZ_SUB, AZ_RG, "westeurope")
    emulator.add_resource_group(AZ_SUB, AZ_RG_OTHER, "northeurope")
    emulator.identities.add(AZ_IDENTITY)
    emulator.pullable[AZ_REGISTRY] = {AZ_IDENTITY}
    yield emulator
    emulator.stop()


@pytest.fixture
def aci_options(arm) -> dict:
    """What an AciBackend needs to reach the emulator: a fake credential (no IMDS), the endpoint, its certificate."""
    from tests.arm_emulator import FakeCredential

    return {
        "credential": FakeCredential(),
        "base_url": arm.url,
        "connection_verify": str(arm.cert),
        "retry_backoff_factor": 0.01,
    }


MODAL_TOKEN = ("ak-pushpooltests0000000000", "as-pushpooltests0000000000")  # fake: only the local server knows it


@pytest.fixture(scope="session")
def modal_server(session_home: Path):
    """The local Modal control plane (tests/modal_emulator.py) on 127.0.0.1, the SDK pointed at it with a fake token.

    Its sandboxes' commands really run on this machine; ``run_commands`` is switched off where a test drives them.
    """
    pytest.importorskip("modal")
    from tests.modal_emulator import ModalEmulator

    server = ModalEmulator(token=MODAL_TOKEN, run_commands=True).start()
    os.environ.update(
        {
            "MODAL_SERVER_URL": server.url,
            "MODAL_TOKEN_ID": MODAL_TOKEN[0],
            "MODAL_TOKEN_SECRET": MODAL_TOKEN[1],
            "MODAL_CONFIG_PATH": str(session_home / "modal.toml"),  # never the developer's ~/.modal.toml
        }
    )
    yield server
    server.stop()


COILED_TOKEN = "pushpool-tests-coiled-token-0000"  # fake: only the local server knows it


@pytest.fixture(scope="session")
def coiled_server(session_home: Path):
    """The local Coiled REST server (tests/coiled_emulator.py) on 127.0.0.1 at DASK_COILED__SERVER, a fake token."""
    from tests.coiled_emulator import CoiledEmulator

    server = CoiledEmulator(token=COILED_TOKEN, run_commands=True).start()
    os.environ.update({"DASK_COILED__SERVER": server.url, "DASK_COILED__TOKEN": COILED_TOKEN})
    yield server
    server.stop()
