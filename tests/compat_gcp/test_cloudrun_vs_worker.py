"""Differential test (issue 15): for a table of realistic job-variable sets, the Job body pushpool sends to Cloud Run
is compared with the one Prefect's cloud-run-v2 worker (prefect-gcp 0.6.22) sends for the same flow run, both received
by the same local Cloud Run Admin API (tests/gcp_emulator.py; each body checked against Google's run.v2 discovery
document on the way in).

The worker runs in its own environment (``.venv-compat-gcp``) through ``worker_driver.py``; ``make compat-gcp`` runs
this. Each case makes two pools with the same defaults — one of type ``cloud-run-v2`` on the worker's own default
template, one of type ``cloud-run-v2:push`` on pushpool's — and one deployment (the case's job variables). Both
dispatch the same run. What may differ is listed once, with its reason, in ``INTENDED`` (docs/cloudrun-compat.md
shows the same table; a test keeps the two in step): each entry normalises exactly that difference away; anything else
that differs fails the case.
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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from pushpool.providers import base_job_template
from pushpool.usecases.submit import submit_run

from tests.differential import differences, start, worker_env
from tests.gcp_emulator import CloudRunEmulator
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cloudrun-compat.md"
PROJECT = "pushpool-test"
KEY = "pnu_compat_gcp_key_do_not_log"


@dataclass(frozen=True)
class Intended:
    id: str
    what: str
    why: str
    normalise: Callable[[dict, dict, dict], None] = field(repr=False, compare=False)  # (ours, theirs, case)


def _task(body: dict) -> dict:
    return body["template"]["template"]


def _timeout(ours: dict, theirs: dict, case: dict) -> None:
    # the worker's 600 s default; pushpool's follows max_run_time_seconds (an explicit timeout is the same on both)
    if _task(theirs).get("timeout") == "600s" and _task(ours).get("timeout") == "86400s":
        _task(ours)["timeout"] = _task(theirs)["timeout"]


WORKER_LABELS = ("worker-name", "version", "deployment-updated", "flow-name", "flow-id")
WORKER_ENV = {"PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT__FLOW_NAME", "PREFECT__WORKER_NAME"}


def _label_holders(body: dict) -> list[dict]:
    return [body.get("labels", {}), body["template"].get("labels", {})]


def _worker_labels(ours: dict, theirs: dict, case: dict) -> None:
    for labels in _label_holders(theirs):
        for name in WORKER_LABELS:
            labels.pop(f"prefect-io-{name}", None)


def _drop_env(body: dict, names: set[str]) -> None:
    container = _task(body)["containers"][0]
    container["env"] = [e for e in container.get("env", []) if e["name"] not in names]


def _worker_env(ours: dict, theirs: dict, case: dict) -> None:
    _drop_env(theirs, WORKER_ENV)


def _two_pools(ours: dict, theirs: dict) -> None:
    """Not a difference: the test dispatches one run through two pools (the worker's and pushpool's)."""
    for body in (ours, theirs):
        for labels in _label_holders(body):
            labels.pop("prefect-io-work-pool-name", None)
            labels.pop("prefect-io-work-pool-id", None)
        container = _task(body)["containers"][0]
        container["env"] = sorted(container.get("env", []), key=lambda e: e["name"])


INTENDED = (
    Intended(
        "timeout",
        "task `timeout` is `max_run_time_seconds` (86400 s) when `timeout` is unset; the worker sends 600 s",
        "a flow longer than 10 minutes would be killed by Cloud Run (Prefect's users hit it; issue 15)",
        _timeout,
    ),
    Intended(
        "worker-labels",
        "no `prefect-io-worker-name`, `-version`, `-deployment-updated`, `-flow-name`, `-flow-id` labels",
        "there is no worker; the flow's name would cost one more Prefect read per run",
        _worker_labels,
    ),
    Intended(
        "worker-env",
        "no `PREFECT_HOME`, `PREFECT_SERVER_EPHEMERAL_ENABLED`, `PREFECT__FLOW_NAME`, `PREFECT__WORKER_NAME`",
        "the worker copies its own process settings into the job (its PREFECT_HOME path too); the job needs none",
        _worker_env,
    ),
    Intended(
        "credentials",
        "the `credentials` block comes from the work pool only: job variables that change it crash the run",
        "a deployment author could sign their job with another pool's service account (docs/security.md)",
        lambda ours, theirs, case: None,  # no case sets credentials in a deployment: the bodies are the same
    ),
)

SECRET = {"secret": "db", "version": "3"}
FILESTORE = "projects/pushpool-test/locations/us-central1/volumePools/p/volumes/v"


def _literal(field_name: str, value: Any) -> Callable[[dict], None]:
    """The pool's job_configuration has ``value`` written literally for ``field_name`` (both pools)."""

    def edit(template: dict) -> None:
        template["job_configuration"][field_name] = value

    return edit


def _in_body(edit_body: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(template: dict) -> None:
        edit_body(template["job_configuration"]["job_body"])

    return edit


def _container_literal(key: str, value: Any) -> Callable[[dict], None]:
    def edit(body: dict) -> None:
        body["template"]["template"]["containers"][0][key] = value

    return _in_body(edit)


def _task_literal(key: str, value: Any) -> Callable[[dict], None]:
    def edit(body: dict) -> None:
        body["template"]["template"][key] = value

    return _in_body(edit)


def _limits_literal(body: dict) -> None:
    body["template"]["template"]["containers"][0]["resources"]["limits"] = {"cpu": "4", "memory": "8Gi"}


def _two_level_labels(body: dict) -> None:
    body["labels"] = {"owner": "platform"}
    body["template"]["labels"] = {"billing": "team-a", "cost-center": "42"}


def _literal_env(body: dict) -> None:
    body["template"]["template"]["containers"][0]["env"] = [{"name": "FROM_TEMPLATE", "value": "x"}]


def _filestore(body: dict) -> None:  # a field of the current run.v2 API (not in google-cloud-run 0.16's protos)
    task = body["template"]["template"]
    task["volumes"] = [{"name": "fs", "filestore": {"volume": FILESTORE}}]
    task["containers"][0]["volumeMounts"] = [{"name": "fs", "mountPath": "/mnt/fs"}]


def _pool_env(template: dict) -> None:
    template["variables"]["properties"]["env"]["default"] = {"LEVEL": "pool", "POOL_ONLY": "p"}


# (deployment job variables, edit of both pools' templates, flow run job variables, documented refusal id)
Case = tuple[dict, Any, "dict | None", "str | None"]
# Every field of the worker's job_configuration with a value that changes the job: each as a job variable (a
# deployment's) and as a literal written into both pools' job_configuration; then every placeholder of its job_body as
# a variable and as a literal of the job_body.
FIELDS: dict[str, Any] = {
    "command": "python -m flows.main --name 'two words'",
    "env": {"TEAM": "données-ü", "EMPTY": "", "NUMBER": "7"},
    "labels": {"team": "data", "Owner.Name": "Ünïcode Value"},
    "name": "custom-name",
    "env_from_secrets": {"DB_PASSWORD": SECRET},
    "prefect_api_auth_string_secret": {"secret": "auth", "version": "1"},
    "cloudsql_instances": ["pushpool-test:us-central1:db"],
    "keep_job": True,
    "region": "europe-west1",
    "timeout": 3600,
}
BODY_FIELDS: dict[str, tuple[Any, Callable[[dict], None]]] = {
    "image": ("us-docker.pkg.dev/pushpool-test/flows/app:2", _container_literal("image", "literal.dev/app:1")),
    "args": (["--verbose", "", "ü"], _container_literal("args", ["--literal", ""])),
    "launch_stage": ("BETA", _in_body(lambda body: body.update(launchStage="BETA"))),
    "max_retries": (2, _task_literal("maxRetries", 3)),
    "cpu": ("2000m", _in_body(_limits_literal)),
    "memory": ("2Gi", _in_body(_limits_literal)),
    "vpc_connector_name": (
        "projects/pushpool-test/locations/us-central1/connectors/c1",
        _task_literal("vpcAccess", {"connector": "projects/pushpool-test/locations/us-central1/connectors/c2"}),
    ),
    "service_account_name": (
        "runner@pushpool-test.iam.gserviceaccount.com",
        _task_literal("serviceAccount", "runner@pushpool-test.iam.gserviceaccount.com"),
    ),
}


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {"defaults": ({}, None, None, None)}
    for name, value in FIELDS.items():
        cases[f"variable-{name}"] = ({name: value}, None, None, None)
        cases[f"literal-{name}"] = ({}, _literal(name, value), None, None)
    for name, (value, literal) in BODY_FIELDS.items():
        cases[f"variable-{name}"] = ({name: value}, None, None, None)
        cases[f"literal-{name}"] = ({}, literal, None, None)
    cases.update(
        {
            "literal-command-in-body": ({}, _container_literal("command", ["python", "main.py"]), None, None),
            "command-empty-is-the-entrypoint": ({"command": ""}, None, None, None),
            "args-empty-string": ({"args": [""]}, None, None, None),
            "args-string": ({}, _container_literal("args", "--a 'b c' ''"), None, None),  # the variable is a list
            "literal-env-in-body": ({"env": {"A": "1"}}, _in_body(_literal_env), None, None),
            "labels-two-levels": (
                {"labels": {"team": "dep"}},
                _in_body(_two_level_labels),
                {"labels": {"x": "run"}},
                None,
            ),
            "env-three-levels": (
                {"env": {"LEVEL": "deployment", "DEP": "d"}},
                _pool_env,
                {"env": {"LEVEL": "run"}},
                None,
            ),
            "secrets-and-credential-env": (
                {"env_from_secrets": {"DB_PASSWORD": SECRET}, "env": {"PREFECT_API_AUTH_STRING": "u:p"}},
                _literal("prefect_api_auth_string_secret", {"secret": "auth", "version": "2"}),
                None,
                None,
            ),
            "current-api-field": ({}, _in_body(_filestore), None, None),
        }
    )
    return cases


CASES = _cases()


def _key_info(token_uri: str) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": f"compat@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


@pytest.fixture(scope="module")
def emulator():
    found = CloudRunEmulator().start()
    found.secrets.add("auth")  # the cases' Prefect auth string secret
    yield found
    found.stop()


@pytest.fixture(scope="module")
def worker(prefect_api: str, emulator: CloudRunEmulator, tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("gcp-worker")
    env = worker_env(prefect_api, KEY, home, PUSHPOOL_CLOUD_RUN_ENDPOINT=emulator.endpoint, NO_GCE_CHECK="True")
    yield from start(os.environ["PUSHPOOL_GCP_WORKER_PYTHON"], Path(__file__).with_name("worker_driver.py"), env)


@pytest.fixture(scope="module")
def block_id(worker, emulator: CloudRunEmulator) -> str:
    answer = worker(
        {
            "block": {"service_account_info": _key_info(f"{emulator.endpoint}/token"), "project": PROJECT},
            "name": f"compat-{uuid.uuid4().hex[:8]}",
        }
    )
    assert answer["ok"], answer
    return answer["id"]


def _pool(prefect: PrefectHelper, template: dict, type_name: str, block: str, edit: Any = None) -> str:
    template = copy.deepcopy(template)
    props = template["variables"]["properties"]
    props["credentials"]["default"] = {"$ref": {"block_document_id": block}}
    props["prefect_api_key_secret"]["default"] = {"secret": "prefect-api-key", "version": "latest"}
    if edit is not None:
        edit(template)
    name = prefect.unique("compat-gcp")
    prefect.create_pool(name, type_name, base_job_template=template)
    return name


def test_there_are_at_least_25_cases_and_every_field_both_ways() -> None:
    assert len(CASES) >= 25
    template = base_job_template("cloud-run-v2:push")
    fields = set(template["job_configuration"]) - {"job_body", "project", "max_run_time_seconds", "credentials"}
    fields |= set(template["variables"]["properties"]) - fields - {"project", "max_run_time_seconds", "credentials"}
    fields -= {"prefect_api_key_secret"}  # set by every case's pools (pushpool refuses the key in plaintext)
    fields -= {"dispatch_lead_seconds"}  # pushpool's own (when to start the job), not the worker's
    for name in fields:
        assert f"variable-{name}" in CASES and f"literal-{name}" in CASES, name


def submit_ours(prefect_api: str, tmp_path: Path, emulator: CloudRunEmulator, run_id: str, pool: str):
    """pushpool's side of a case: the run submitted by ``submit_run`` against the local Cloud Run API (both suites)."""
    deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
    deps.backend_options["cloudrun"] = {
        "credentials": AnonymousCredentials(),
        "endpoint": emulator.endpoint,
        "check_image_platform": False,
        "retry_initial": 0.01,
    }
    try:
        client = deps.orchestrator
        return submit_run(deps, client.read_flow_run(run_id), client.read_work_pool(pool), trigger="compat")
    finally:
        deps.orchestrator.close()


@pytest.mark.parametrize("case", list(CASES))
def test_pushpool_sends_what_the_worker_sends(
    case: str, worker, block_id: str, emulator: CloudRunEmulator, prefect: PrefectHelper, prefect_api: str, tmp_path
) -> None:
    variables, edit, run_variables, refused = CASES[case]
    theirs_pool = _pool(prefect, worker({"template": True})["template"], "cloud-run-v2", block_id, edit)
    ours_pool = _pool(prefect, base_job_template("cloud-run-v2:push"), "cloud-run-v2:push", block_id, edit)
    run_body = {"job_variables": run_variables} if run_variables else {}
    run_id = prefect.create_run(prefect.create_deployment(ours_pool, job_variables=variables), **run_body)

    answer = worker({"pool": theirs_pool, "run_id": run_id})
    assert answer["ok"], answer
    region = "europe-west1" if case.endswith("-region") else "us-central1"
    theirs = emulator.received(f"projects/{PROJECT}/locations/{region}/jobs/{answer['identifier']}")

    outcome = submit_ours(prefect_api, tmp_path, emulator, run_id, ours_pool)
    if refused is not None:  # documented: pushpool refuses what the worker runs (the reason is in the doc)
        assert outcome.outcome != "submitted" and refused in {i.id for i in INTENDED}, outcome
        return
    assert outcome.outcome == "submitted", outcome
    ours = emulator.received(outcome.job_id.split("/executions/")[0])

    for intended in INTENDED:
        intended.normalise(ours, theirs, variables)
    _two_pools(ours, theirs)
    assert differences(_canonical(ours), _canonical(theirs)) == []
    assert KEY not in json.dumps(ours) and KEY not in json.dumps(theirs)


def _canonical(value: Any) -> Any:
    """Numbers as the client sends them (enum-encoding=int, int64 as text) compare equal to their JSON forms."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        return {v["name"]: _canonical(v) for v in value}  # env entries, volumes: by name (order is not meaning)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if value == "GA":
        return 4
    if value == "BETA":
        return 3
    return value


def test_the_document_lists_every_intended_difference() -> None:
    text = DOC.read_text()
    listed = [i for i in re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.M) if not i.startswith("v1-")]
    assert listed == [i.id for i in INTENDED]
