"""Differential test (issue 24): for a table of job-variable sets and edited pool templates, the requests pushpool sends
Coiled are compared with the ones Prefect's Coiled worker (prefect-coiled 0.0.4, through the coiled SDK 1.135.6's
``coiled.batch.run``) sends for the same flow run, both received by the same local Coiled server
(tests/coiled_emulator.py), which checks every body against Coiled's API as the SDK sends it
(tests/coiled_api_schema.py) and refuses any other with 400.

The worker runs in its own environment (``.venv-compat-coiled``) through ``worker_driver.py``; ``make compat-coiled``
runs this. Each case makes two pools — one of type ``coiled`` on the worker's own default template, one of type
``coiled:push`` on pushpool's — with the case's template edits applied to both, and one deployment (the case's job
variables). Both dispatch the same run. Compared: the job spec (``POST /api/v2/jobs/compressed``), the cluster
(``POST /api/v2/clusters/account/<ws>/``) and the software environment made for it. What may differ is listed once,
with its reason, in ``INTENDED`` (docs/coiled-compat.md shows the same table; a test keeps the two in step): each
entry normalises exactly that difference away; anything else that differs fails the case. A case both sides refuse
compares the refusal: pushpool crashes the run, the worker raises, and neither sends a job.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pushpool.providers import base_job_template
from pushpool.usecases.submit import submit_run

from tests.conftest import COILED_TOKEN
from tests.differential import differences, start, worker_env
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "coiled-compat.md"
KEY = "pnu_compat_coiled_key_do_not_log"
POOL_TOKEN = "pushpool-compat-coiled-pool-token"  # another user's token, in a coiled-credentials block of the pool
DEFAULT_IMAGE = "prefecthq/prefect:3-latest"


@dataclass(frozen=True)
class Intended:
    id: str
    what: str
    why: str
    normalise: Callable[[dict, dict, dict], None] = field(repr=False, compare=False)  # (ours, theirs, case)


def _cluster_name(ours: dict, theirs: dict, case: dict) -> None:
    assert re.fullmatch(r"pushpool-[0-9a-f]{32}", ours["cluster"]["name"]), ours["cluster"]["name"]
    assert theirs["cluster"]["name"].startswith(f"{theirs['job']['workspace']}-")
    ours["cluster"]["name"] = theirs["cluster"]["name"]


def _pushpool_tags(ours: dict, theirs: dict, case: dict) -> None:
    for tag in ("pushpool-run", "pushpool-attempt", "pushpool-pool"):
        assert ours["cluster"]["tags"].pop(tag)


WORKER_LABELS = ("worker-name", "version", "deployment-updated", "flow-name", "flow-id")


def _worker_labels(ours: dict, theirs: dict, case: dict) -> None:
    for name in WORKER_LABELS:
        theirs["cluster"]["tags"].pop(name, None)


WORKER_ENV = {"PREFECT__WORKER_NAME", "PREFECT__FLOW_NAME", "PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_ENABLED"}


def _worker_env(ours: dict, theirs: dict, case: dict) -> None:
    for name in WORKER_ENV:
        theirs["job"]["secret_env_vars"].pop(name, None)


def _client_state(ours: dict, theirs: dict, case: dict) -> None:
    for key in ("dask_config", "local_versions"):
        assert key not in ours["cluster"]
        theirs["cluster"].pop(key, None)


def _timeouts(ours: dict, theirs: dict, case: dict) -> None:
    limit = case.get("variables", {}).get("max_run_time_seconds", 86400)
    assert ours["cluster"].pop("cluster_timeout_seconds") == limit
    assert theirs["cluster"].pop("cluster_timeout_seconds", None) is None
    if "job_timeout" not in (case.get("variables", {}).get("additional_coiled_options") or {}):
        assert ours["job"].pop("job_timeout_seconds") == limit
        assert theirs["job"].pop("job_timeout_seconds", None) is None


def _no_image(ours: dict, theirs: dict, case: dict) -> None:
    """No image and no software environment: the worker package-syncs its own Python environment."""
    if theirs["cluster"].get("env_id") is None:
        return
    assert ours["cluster"]["extra_user_container"] == DEFAULT_IMAGE
    assert theirs["cluster"].get("extra_user_container") is None
    assert theirs["environment"]["packages"] and theirs["environment"].get("container") is None
    theirs["cluster"].pop("env_id")
    for key in ("extra_user_container", "extra_user_container_ignore_entrypoint", "env_name"):
        theirs["cluster"][key] = ours["cluster"][key]
    theirs["environment"] = ours["environment"]


def _empty_region(ours: dict, theirs: dict, case: dict) -> None:
    if case.get("variables", {}).get("region") != "":
        return
    assert "region_name" not in ours["cluster"]["options"] and theirs["cluster"]["options"].pop("region_name") == ""
    assert ours["environment"].get("region_name") is None and theirs["environment"].pop("region_name") == ""


INTENDED = (
    Intended(
        "cluster-name",
        "the cluster's name is `pushpool-<digest of run and attempt>`; the SDK names it `<workspace>-<random>`",
        "a retried submit finds its attempt's cluster by name instead of starting a second VM",
        _cluster_name,
    ),
    Intended(
        "pushpool-tags",
        "three more cluster tags: `pushpool-run`, `pushpool-attempt`, `pushpool-pool`",
        "the attempt's cluster is found by them (a retried submit, the monitor's orphan search)",
        _pushpool_tags,
    ),
    Intended(
        "worker-labels",
        "no `worker-name`, `version`, `deployment-updated`, `flow-name`, `flow-id` cluster tags",
        "there is no worker; the flow's name and id would cost one more Prefect read per run",
        _worker_labels,
    ),
    Intended(
        "worker-env",
        "no `PREFECT__WORKER_NAME`, `PREFECT__FLOW_NAME`, `PREFECT_HOME`, `PREFECT_SERVER_EPHEMERAL_ENABLED` in the "
        "job's environment",
        "there is no worker; the worker copies its own process's settings into the job, which needs none of them",
        _worker_env,
    ),
    Intended(
        "client-state",
        "no `dask_config` and no `local_versions` in the cluster request",
        "the SDK sends the submitting machine's whole dask configuration and package versions (the worker's); "
        "a batch job's container uses neither, and pushpool has no dask",
        _client_state,
    ),
    Intended(
        "timeouts",
        "`job_timeout_seconds` and `cluster_timeout_seconds` are `max_run_time_seconds` (86400 s by default); "
        "the worker sets none (an explicit `job_timeout` option is sent as the worker sends it)",
        "pushpool stops every run at `max_run_time_seconds` on every backend; Coiled then stops the VM itself "
        "too, even if no monitor runs — raise `max_run_time_seconds` for longer runs",
        _timeouts,
    ),
    Intended(
        "no-image",
        "with neither `image` nor `software`, the job runs in Prefect's image `prefecthq/prefect:3-latest` "
        "(pushpool's template default); the worker package-syncs its own Python environment instead",
        "package sync copies the submitting machine's packages: pushpool's function has no flow code or "
        "dependencies to copy; set `image` (or `software`) to choose the environment",
        _no_image,
    ),
    Intended(
        "empty-region",
        '`region: ""` is no region (the workspace\'s default), as an empty `workspace`, `software` or `memory` is '
        'unset on both sides; the worker sends `region_name: ""`',
        "an empty string is what a cleared form field leaves; Coiled has no region of that name",
        _empty_region,
    ),
    Intended(
        "credentials",
        "the `credentials` block comes from the work pool only: job variables that change it crash the run",
        "a deployment author could submit with another pool's Coiled token (docs/security.md)",
        lambda ours, theirs, case: None,  # the refusal is its own case (`credentials-in-deployment`)
    ),
)


def _literal(name: str, value: Any) -> Callable[[dict], None]:
    """A template edit: ``job_configuration[name]`` is the literal ``value`` instead of ``{{ name }}``."""

    def edit(template: dict) -> None:
        template["job_configuration"][name] = value

    return edit


def _default(name: str, value: Any) -> Callable[[dict], None]:
    """A template edit: the pool's default of variable ``name``."""

    def edit(template: dict) -> None:
        template["variables"]["properties"][name]["default"] = value

    return edit


IMAGE = "ghcr.io/acme/flows:2.1"
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "image": {"variables": {"image": IMAGE}},
    "software": {"variables": {"software": "acme-flows-env"}},
    "software-and-image": {"variables": {"software": "acme-flows-env", "image": IMAGE}},
    "region": {"variables": {"image": IMAGE, "region": "us-west-2"}},
    "vm-types": {"variables": {"image": IMAGE, "vm_types": ["t3.large", "t3.xlarge"]}},
    "cpu": {"variables": {"image": IMAGE, "cpu": 8}},
    "memory": {"variables": {"image": IMAGE, "memory": "64 GiB"}},
    "cpu-and-memory": {"variables": {"image": IMAGE, "cpu": 4, "memory": "8GiB"}},
    "gpu": {"variables": {"image": IMAGE, "gpu": True}},
    "gpu-with-vm-types": {"variables": {"image": IMAGE, "gpu": True, "vm_types": ["g4dn.2xlarge"]}},
    "gpu-on-gcp": {"variables": {"image": IMAGE, "gpu": True, "vm_types": ["n1-standard-4"]}, "cloud": "vm_gcp"},
    "defaults-on-gcp": {"variables": {"image": IMAGE}, "cloud": "vm_gcp"},
    "arm": {"variables": {"image": IMAGE, "arm": True}},
    "arm-and-cpu": {"variables": {"image": IMAGE, "arm": True, "cpu": 8}},
    "workspace": {"variables": {"image": IMAGE, "workspace": "other-workspace"}},
    "env-by-value": {"variables": {"image": IMAGE, "env": {"TEAM": "data", "EMPTY": "", "GREETING": "grüß dich ✓"}}},
    "labels": {"variables": {"image": IMAGE, "labels": {"team": "data", "prefect.io/x": "y", "ünï": "cødé"}}},
    "command": {"variables": {"image": IMAGE, "command": "sh -c 'echo \"$TEAM is here\" && prefect version'"}},
    "command-script": {"variables": {"image": IMAGE, "command": "flows/main.py --day 2026-12-06"}},
    "name": {"variables": {"image": IMAGE, "name": "nightly-ünïcode"}},
    "spot": {"variables": {"image": IMAGE, "additional_coiled_options": {"spot_policy": "spot_with_fallback"}}},
    "disk-and-timeout": {
        "variables": {"image": IMAGE, "additional_coiled_options": {"disk_size": "200 GiB", "job_timeout": "2 hours"}}
    },
    "options-more": {
        "variables": {
            "image": IMAGE,
            "additional_coiled_options": {
                "allow_cross_zone": False,
                "max_retries": 2,
                "ignore_container_entrypoint": True,
                "env": {"PLAIN": "visible"},
                "scheduler_vm_type": ["t3.large"],
            },
        }
    },
    "empty-strings": {"variables": {"image": IMAGE, "region": "", "workspace": "", "software": "", "memory": ""}},
    "max-run-time": {"variables": {"image": IMAGE, "max_run_time_seconds": 7200}},
    "pool-credentials": {"variables": {"image": IMAGE}, "credentials": True},
    "pool-defaults": {
        "edits": [
            _default("image", IMAGE),
            _default("region", "eu-west-1"),
            _default("cpu", 4),
            _default("env", {"FROM_POOL": "1"}),
            _default("labels", {"owner": "pool"}),
        ],
        "variables": {"env": {"FROM_DEPLOYMENT": "2"}},
    },
    "literal-fields": {
        "edits": [
            _literal("image", IMAGE),
            _literal("region", "us-east-2"),
            _literal("vm_types", ["m6i.xlarge"]),
            _literal("workspace", "other-workspace"),
            _literal("arm", False),
            _literal("gpu", False),
            _literal("env", {"LITERAL": "yes", "MERGED": "{{ image }}"}),
        ],
        "variables": {"image": "ignored:1", "env": {"ALSO": "1"}},
    },
    "literal-sizes": {
        "edits": [
            _literal("cpu", 4),
            _literal("memory", "16 GiB"),
            _literal("software", None),
            _literal("additional_coiled_options", {"spot_policy": "spot"}),
            _literal("command", "python -m app"),
            _literal("labels", {"fixed": "label"}),
            _literal("name", "fixed-name"),
        ],
        "variables": {"image": IMAGE},
    },
    "refused-vm-types-and-cpu": {"variables": {"image": IMAGE, "cpu": 4, "vm_types": ["t3.xlarge"]}, "refused": True},
    "refused-spot-policy": {
        "variables": {"image": IMAGE, "additional_coiled_options": {"spot_policy": "cheap"}},
        "refused": True,
    },
    "refused-tag-option": {
        "variables": {"image": IMAGE, "additional_coiled_options": {"tag": {"a": "b"}}},
        "refused": True,
    },
}


@pytest.fixture(scope="module")
def emulator(coiled_server):
    coiled_server.run_commands = False  # nothing runs: the requests are what is compared
    coiled_server.add_account(POOL_TOKEN, "pool-user", {"pushpool-tests", "other-workspace"})
    yield coiled_server
    coiled_server.run_commands = True


@pytest.fixture(scope="module")
def worker(prefect_api: str, emulator, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("coiled-worker")
    env = worker_env(
        prefect_api,
        KEY,
        home,
        DASK_COILED__SERVER=emulator.url,
        DASK_COILED__TOKEN=COILED_TOKEN,
        DASK_CONFIG=str(home / "dask"),
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    driver = Path(__file__).with_name("worker_driver.py")
    # cwd: package sync uploads the working directory's code: an empty one
    yield from start(os.environ["PUSHPOOL_COILED_WORKER_PYTHON"], driver, env, cwd=home)


@pytest.fixture(scope="module")
def block_id(worker) -> str:
    answer = worker({"block": POOL_TOKEN, "name": f"compat-{uuid.uuid4().hex[:8]}"})
    assert answer["ok"], answer
    return answer["id"]


def _pool(prefect: PrefectHelper, template: dict, type_name: str, case: dict, block: str | None) -> str:
    template = copy.deepcopy(template)
    for edit in case.get("edits", []):
        edit(template)
    if block:
        template["variables"]["properties"]["credentials"]["default"] = {"$ref": {"block_document_id": block}}
    name = prefect.unique("compat-coiled")
    prefect.create_pool(name, type_name, base_job_template=template)
    return name


def _sent(requests: list) -> dict:
    """The job, cluster and software environment bodies of one dispatch (the last of each)."""
    found: dict[str, Any] = {}
    for method, path, body in requests:
        if method != "POST":
            continue
        if path == "/api/v2/jobs/compressed":
            found["job"] = copy.deepcopy(body)
        elif path.startswith("/api/v2/clusters/account/"):
            found["cluster"] = copy.deepcopy(body)
        elif path.startswith("/api/v2/software-environment/account/"):
            found["environment"] = copy.deepcopy(body)
    return found


@pytest.mark.parametrize("case_id", list(CASES))
def test_pushpool_sends_what_the_worker_sends(
    case_id: str, worker, block_id: str, emulator, prefect: PrefectHelper, prefect_api: str, tmp_path
) -> None:
    case = CASES[case_id]
    block = block_id if case.get("credentials") else None
    theirs_pool = _pool(prefect, worker({"template": True})["template"], "coiled", case, block)
    ours_pool = _pool(prefect, base_job_template("coiled:push"), "coiled:push", case, block)
    run_id = prefect.create_run(prefect.create_deployment(ours_pool, job_variables=case.get("variables", {})))
    cloud = case.get("cloud")
    if cloud:
        emulator.providers["pushpool-tests"] = cloud
    refused_before = len(emulator.refused)
    try:
        start = len(emulator.requests)
        answer = worker({"pool": theirs_pool, "run_id": run_id})
        theirs = _sent(emulator.requests[start:])
        start = len(emulator.requests)
        deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
        try:
            client = deps.orchestrator
            outcome = submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(ours_pool), trigger="compat")
        finally:
            deps.orchestrator.close()
        ours = _sent(emulator.requests[start:])
    finally:
        emulator.providers.pop("pushpool-tests", None)
    assert emulator.refused[refused_before:] == []  # neither side sent a body Coiled's API would refuse

    if case.get("refused"):  # the worker posts the job first: the SDK refuses before the cluster, leaving the job
        assert not answer["ok"] and "cluster" not in theirs, answer
        assert outcome.outcome == "crashed" and ours == {}, outcome
        return
    assert answer["ok"], answer
    assert outcome.outcome == "submitted", outcome
    if case.get("credentials"):  # both submitted with the pool's token
        assert {t for m, p, t in emulator.callers if p.startswith("/api/v2/jobs/compressed")} >= {POOL_TOKEN}
    for intended in INTENDED:
        intended.normalise(ours, theirs, case)
    _two_jobs(ours, theirs)
    found = differences(_canonical(ours), _canonical(theirs))
    assert found == [], "\n".join(found)
    assert KEY not in json.dumps(ours["job"]["env_vars"]) and KEY not in json.dumps(ours["cluster"])


def _two_jobs(ours: dict, theirs: dict) -> None:
    """Not a difference: each side's cluster names its own job, and the test dispatches through two pools."""
    for body in (ours, theirs):
        assert len(body["cluster"].pop("batch_job_ids")) == 1
        body["cluster"]["tags"].pop("work-pool-id", None)
        body["cluster"]["tags"].pop("work-pool-name", None)


def _canonical(value: Any) -> Any:
    """A field sent as null is the field left out (Coiled's API defaults both the same): nulls are dropped."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items()) if v is not None}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def test_a_deployment_may_not_choose_the_credentials(prefect: PrefectHelper, prefect_api: str, tmp_path) -> None:
    """The `credentials` row: the worker takes any block a deployment names; pushpool crashes the run."""
    pool = _pool(prefect, base_job_template("coiled:push"), "coiled:push", {}, None)
    variables = {"image": IMAGE, "credentials": {"api_token": POOL_TOKEN}}
    run_id = prefect.create_run(prefect.create_deployment(pool, job_variables=variables))
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    try:
        client = deps.orchestrator
        outcome = submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool), trigger="compat")
    finally:
        deps.orchestrator.close()
    assert outcome.outcome == "crashed"
    assert "credentials" in prefect.read_run(run_id)["state"]["message"]


def test_the_document_lists_every_intended_difference() -> None:
    text = DOC.read_text()
    listed = re.findall(r"^\| `([a-z-]+)` \|", text, flags=re.M)
    assert listed == [i.id for i in INTENDED]
