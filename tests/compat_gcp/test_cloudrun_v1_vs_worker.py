"""Differential test (issue 24) for the v1 ``cloud-run`` type: for a table of job-variable sets and edited pool
templates, the Job pushpool's ``cloud-run:push`` sends to Cloud Run is compared with the one Prefect's v1 ``cloud-run``
worker (prefect-gcp 0.6.22's ``CloudRunWorker``) sends for the same flow run, both received by the same local Cloud
Run Admin API (tests/gcp_emulator.py: pushpool's v2 body checked against the run.v2 discovery document, the worker's
v1 body against run.v1's).

The two speak different versions of the API: the worker the v1 (Knative-shaped) ``namespaces.jobs.create``, pushpool
v2's ``projects.locations.jobs.create``. The worker's body is read into the v2 shape field by field (``_as_v2``: the
v1 → v2 field mapping Google documents, e.g. ``timeoutSeconds: "600"`` → ``timeout: "600s"``, the vpc-access-connector
annotation → ``vpcAccess.connector``, ``valueFrom.secretKeyRef {name, key}`` → ``valueSource.secretKeyRef {secret,
version}``); a v1 field it cannot map stays under its v1 name and fails the case. What may then differ is listed once,
with its reason, in ``INTENDED`` (docs/cloudrun-compat.md, second table); anything else fails the case.

Each case makes two pools — type ``cloud-run`` on the worker's default template, type ``cloud-run:push`` on pushpool's,
each with the case's edit (a literal written into the template, in its own API's shape) — and one deployment.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from pushpool.providers import base_job_template

from tests.compat_gcp.test_cloudrun_vs_worker import (  # noqa: F401 - the module's fixtures: one worker, one API
    DOC,
    INTENDED,
    KEY,
    PROJECT,
    SECRET,
    Intended,
    _canonical,
    _key_info,
    _task,
    _two_pools,
    block_id,
    emulator,
    submit_ours,
    worker,
)
from tests.differential import differences
from tests.gcp_emulator import CloudRunEmulator
from tests.helpers import PrefectHelper

pytestmark = pytest.mark.integration

BY_ID = {i.id: i for i in INTENDED}
# The worker's default image: docker.io/<prefect image of its own Prefect version and Python> (prefect 3.8.8 here).
WORKER_IMAGE = re.compile(r"^docker\.io/prefecthq/prefect:\d+\.\d+\.\d+-python\d+\.\d+$")


def _v1_retries(ours: dict, theirs: dict, case: dict) -> None:
    # the v1 worker's template has no maxRetries (Cloud Run's default: 3); pushpool sends 0 unless the body sets one
    if "maxRetries" not in _task(theirs) and _task(ours).get("maxRetries") == 0:
        del _task(ours)["maxRetries"]


def _v1_default_image(ours: dict, theirs: dict, case: dict) -> None:
    ours_c, theirs_c = _task(ours)["containers"][0], _task(theirs)["containers"][0]
    if ours_c.get("image") == "docker.io/prefecthq/prefect:3-latest" and WORKER_IMAGE.match(theirs_c.get("image", "")):
        ours_c["image"] = theirs_c["image"]


def _v1_timeout_literal(ours: dict, theirs: dict, case: dict) -> None:
    # `timeout` written into the job_configuration (not the job body): pushpool's task timeout follows it; the v1
    # worker's body reads the variable (600 s) and leaves the job_configuration's value unused
    literal = f"{FIELDS['timeout']}s"
    if "timeout" not in case and _task(ours).get("timeout") == literal and _task(theirs).get("timeout") == "600s":
        _task(ours)["timeout"] = "600s"


def _v1_client(ours: dict, theirs: dict, case: dict) -> None:
    if ours.get("client") == "prefect" and "client" not in theirs:
        del ours["client"]


V1_INTENDED = (
    Intended(
        "v1-retries",
        "`maxRetries: 0` when the template sets none; the v1 worker sends none (Cloud Run's default: 3 retries)",
        "a crashed flow run's container is not started again by Cloud Run: retries are the flow's, through Prefect",
        _v1_retries,
    ),
    Intended(
        "v1-default-image",
        "`docker.io/prefecthq/prefect:3-latest` when `image` is unset; the worker: its own Prefect and Python version",
        "pushpool never imports Prefect (it has no Prefect version of its own to name)",
        _v1_default_image,
    ),
    Intended(
        "v1-timeout-literal",
        "a `timeout` written into the job_configuration sets the task timeout; the v1 worker leaves it unused",
        "one rule for both types (the v2 worker's): the job_configuration's `timeout` is the task's",
        _v1_timeout_literal,
    ),
    Intended(
        "v1-client",
        "`client: prefect` (the v2 template's, as the v2 worker sends it); the v1 worker names no client",
        "an attribution string Cloud Run shows in the console; it changes nothing the job does",
        _v1_client,
    ),
)
# The v2 rows that hold for v1 too (the same code builds the body; the same reasons).
SHARED = ("timeout", "worker-labels", "worker-env", "credentials")


# -- the worker's v1 body read as v2 ----------------------------------------------------------------------------------

LAUNCH_STAGE = "run.googleapis.com/launch-stage"
VPC_CONNECTOR = "run.googleapis.com/vpc-access-connector"


def _as_v2(v1: dict) -> dict:
    """The worker's v1 Job in the v2 shape (Google's v1 → v2 field mapping). Fields without a v2 twin are kept under
    their v1 names, where the comparison sees them."""
    v1 = copy.deepcopy(v1)
    metadata, spec = v1.pop("metadata", {}), v1.pop("spec", {})
    assert v1.pop("apiVersion") == "run.googleapis.com/v1" and v1.pop("kind") == "Job"
    metadata.pop("name", None)  # the job id: the worker's is random, pushpool's a digest (documented)
    annotations = metadata.pop("annotations", {})
    body: dict[str, Any] = {**v1, **({"v1metadata": metadata} if set(metadata) - {"labels"} else {})}
    if LAUNCH_STAGE in annotations:
        body["launchStage"] = annotations.pop(LAUNCH_STAGE)
    if annotations:
        body["annotations"] = annotations
    if "labels" in metadata:
        body["labels"] = metadata["labels"]
    execution = spec.pop("template")
    if spec:
        body["v1spec"] = spec
    exec_meta, exec_spec = execution.get("metadata", {}), execution["spec"]
    task_spec = exec_spec.pop("template")["spec"]
    template: dict[str, Any] = {**exec_spec}  # parallelism, taskCount have the same names
    exec_annotations = dict(exec_meta.get("annotations", {}))
    connector = exec_annotations.pop(VPC_CONNECTOR, None)
    if exec_annotations:
        template["annotations"] = exec_annotations
    if "labels" in exec_meta:
        template["labels"] = exec_meta["labels"]
    task: dict[str, Any] = {}
    for key, value in task_spec.items():
        if key == "timeoutSeconds":
            task["timeout"] = f"{value}s"
        elif key == "serviceAccountName":
            task["serviceAccount"] = value
        elif key == "containers":
            task["containers"] = [_container(c) for c in value]
        else:
            task[key] = value  # maxRetries, volumes: the same names
    if connector is not None:
        task["vpcAccess"] = {"connector": connector}
    template["template"] = task
    body["template"] = template
    return body


def _container(v1: dict) -> dict:
    container = dict(v1)
    resources = container.get("resources")
    # the worker sets requests = limits; v2 has limits only (a v1 request defaults to the limit)
    if resources is not None and resources.get("requests") == resources.get("limits"):
        resources.pop("requests", None)
    env = []
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None and set(entry["valueFrom"]) == {"secretKeyRef"} and set(ref) <= {"name", "key"}:
            entry = {"name": entry["name"], "valueSource": {"secretKeyRef": {"secret": ref["name"]}}}
            if "key" in ref:
                entry["valueSource"]["secretKeyRef"]["version"] = ref["key"]
        env.append(entry)
    if "env" in container:
        container["env"] = env
    return container


# -- the cases --------------------------------------------------------------------------------------------------------

# (deployment job variables, edit of pushpool's template, edit of the worker's template, flow run job variables,
#  documented refusal id). "BLOCK" in job variables is replaced by the credentials block's id.
Case = tuple[dict, "Callable[[dict], None] | None", "Callable[[dict], None] | None", "dict | None", "str | None"]


def _config(field_name: str, value: Any) -> Callable[[dict], None]:
    def edit(template: dict) -> None:
        template["job_configuration"][field_name] = value

    return edit


def _ours(edit_task: Callable[[dict], None]) -> Callable[[dict], None]:
    """Edit pushpool's (v2-shaped) job body's task template."""

    def edit(template: dict) -> None:
        edit_task(template["job_configuration"]["job_body"]["template"]["template"])

    return edit


def _theirs(edit_task: Callable[[dict], None]) -> Callable[[dict], None]:
    """Edit the worker's (v1-shaped) job body's task spec."""

    def edit(template: dict) -> None:
        edit_task(template["job_configuration"]["job_body"]["spec"]["template"]["spec"]["template"]["spec"])

    return edit


def _container_set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda task: task["containers"][0].__setitem__(key, value)


def _both_container(key: str, value: Any) -> tuple[Callable[[dict], None], Callable[[dict], None]]:
    return _ours(_container_set(key, value)), _theirs(_container_set(key, value))


def _ours_labels(template: dict) -> None:
    body = template["job_configuration"]["job_body"]
    body["labels"] = {"owner": "platform"}
    body["template"]["labels"] = {"billing": "team-a"}


def _theirs_labels(template: dict) -> None:
    body = template["job_configuration"]["job_body"]
    body["metadata"]["labels"] = {"owner": "platform"}
    body["spec"]["template"]["metadata"]["labels"] = {"billing": "team-a"}


def _ours_connector(template: dict) -> None:
    _ours(lambda task: task.__setitem__("vpcAccess", {"connector": CONNECTOR}))(template)


def _theirs_connector(template: dict) -> None:
    body = template["job_configuration"]["job_body"]
    body["spec"]["template"]["metadata"]["annotations"][VPC_CONNECTOR] = CONNECTOR


def _pool_env(template: dict) -> None:
    template["variables"]["properties"]["env"]["default"] = {"LEVEL": "pool", "POOL_ONLY": "p"}


CONNECTOR = "projects/pushpool-test/locations/us-central1/connectors/c1"
ACCOUNT = "runner@pushpool-test.iam.gserviceaccount.com"
# Every field of the v1 worker's job_configuration with a value that changes the job, as a job variable and as a
# literal written into both pools' job_configuration.
FIELDS: dict[str, Any] = {
    "command": "python -m flows.main --name 'two words'",
    "env": {"TEAM": "données-ü", "EMPTY": "", "NUMBER": "7"},
    "labels": {"team": "data", "Owner.Name": "Ünïcode Value"},
    "name": "custom-name",
    "region": "europe-west1",
    "timeout": 3600,
    "keep_job": True,
    "prefect_api_auth_string_secret": {"secret": "auth", "version": "1"},
}
# Every placeholder of its job_body, as a job variable and as a literal of each side's job body.
BODY_FIELDS: dict[str, tuple[Any, Callable[[dict], None], Callable[[dict], None]]] = {
    "image": ("us-docker.pkg.dev/pushpool-test/flows/app:2", *_both_container("image", "literal.dev/app:1")),
    "cpu": (
        "2000m",
        *_both_container("resources", {"limits": {"cpu": "4000m", "memory": "8Gi"}}),
    ),
    "memory": ("2Gi", *_both_container("resources", {"limits": {"cpu": "1000m", "memory": "1Gi"}})),
    "vpc_connector_name": (CONNECTOR, _ours_connector, _theirs_connector),
    "service_account_name": (
        ACCOUNT,
        _ours(lambda task: task.__setitem__("serviceAccount", ACCOUNT)),
        _theirs(lambda task: task.__setitem__("serviceAccountName", ACCOUNT)),
    ),
}


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {"defaults": ({}, None, None, None, None)}
    for name, value in FIELDS.items():
        cases[f"variable-{name}"] = ({name: value}, None, None, None, None)
        cases[f"literal-{name}"] = ({}, _config(name, value), _config(name, value), None, None)
    for name, (value, ours, theirs) in BODY_FIELDS.items():
        cases[f"variable-{name}"] = ({name: value}, None, None, None, None)
        cases[f"literal-{name}"] = ({}, ours, theirs, None, None)
    cases.update(
        {
            "literal-command-in-body": ({}, *_both_container("command", ["python", "main.py"]), None, None),
            "command-empty-is-the-entrypoint": ({"command": ""}, None, None, None, None),
            "literal-args-in-body": ({}, *_both_container("args", ["--verbose", "", "ü"]), None, None),
            "retries-in-body": (
                {},
                _ours(lambda task: task.__setitem__("maxRetries", 2)),
                _theirs(lambda task: task.__setitem__("maxRetries", 2)),
                None,
                None,
            ),
            "empty-strings": ({"env": {"EMPTY": ""}, "labels": {"empty": ""}}, None, None, None, None),
            "labels-two-levels": (
                {"labels": {"team": "dep"}},
                _ours_labels,
                _theirs_labels,
                {"labels": {"x": "r"}},
                None,
            ),
            "env-three-levels": (
                {"env": {"LEVEL": "deployment", "DEP": "d"}},
                _pool_env,
                _pool_env,
                {"env": {"LEVEL": "run"}},
                None,
            ),
            "credential-env-by-secret": (
                {"env": {"PREFECT_API_AUTH_STRING": "u:p"}},
                _config("prefect_api_auth_string_secret", {"secret": "auth", "version": "2"}),
                _config("prefect_api_auth_string_secret", {"secret": "auth", "version": "2"}),
                None,
                None,
            ),
            "credentials-in-deployment": (
                {"credentials": "KEY"},
                None,
                None,
                None,
                "credentials",
            ),
        }
    )
    return cases


CASES = _cases()


def _pool(prefect: PrefectHelper, template: dict, type_name: str, block: str, edit: Any) -> str:
    template = copy.deepcopy(template)
    props = template["variables"]["properties"]
    props["credentials"]["default"] = {"$ref": {"block_document_id": block}}
    props["prefect_api_key_secret"]["default"] = {"secret": "prefect-api-key", "version": "latest"}
    if edit is not None:
        edit(template)
    name = prefect.unique("compat-gcp-v1")
    prefect.create_pool(name, type_name, base_job_template=template)
    return name


def _with_key(value: Any, api: CloudRunEmulator) -> Any:
    block = {"service_account_info": _key_info(f"{api.endpoint}/token"), "project": PROJECT}
    return json.loads(json.dumps(value).replace('"KEY"', json.dumps(block)))


def test_there_are_at_least_15_cases_and_every_field_both_ways() -> None:
    assert len(CASES) >= 15
    template = base_job_template("cloud-run:push")
    fields = set(template["variables"]["properties"])
    fields -= {"project", "max_run_time_seconds", "dispatch_lead_seconds", "credentials", "prefect_api_key_secret"}
    for name in fields:
        assert f"variable-{name}" in CASES and f"literal-{name}" in CASES, name


@pytest.mark.parametrize("case", list(CASES))
def test_pushpool_v1_sends_what_the_v1_worker_sends(
    case: str,
    worker,  # noqa: F811 - the fixture imported above
    block_id: str,  # noqa: F811
    emulator: CloudRunEmulator,  # noqa: F811
    prefect: PrefectHelper,
    prefect_api: str,
    tmp_path,
) -> None:
    variables, edit_ours, edit_theirs, run_variables, refused = CASES[case]
    variables = _with_key(variables, emulator)
    theirs_pool = _pool(prefect, worker({"template": True, "v1": True})["template"], "cloud-run", block_id, edit_theirs)
    ours_pool = _pool(prefect, base_job_template("cloud-run:push"), "cloud-run:push", block_id, edit_ours)
    run_body = {"job_variables": run_variables} if run_variables else {}
    run_id = prefect.create_run(prefect.create_deployment(ours_pool, job_variables=variables), **run_body)

    answer = worker({"pool": theirs_pool, "run_id": run_id, "v1": True})
    assert answer["ok"], answer
    theirs = _as_v2(emulator.received_v1(f"namespaces/{answer['project']}/jobs/{answer['identifier']}"))

    outcome = submit_ours(prefect_api, tmp_path, emulator, run_id, ours_pool)
    if refused is not None:  # documented: pushpool refuses what the worker runs (the reason is in the doc)
        assert outcome.outcome != "submitted" and refused in SHARED, outcome
        return
    assert outcome.outcome == "submitted", outcome
    job = outcome.job_id.split("/executions/")[0]
    assert job.startswith(f"projects/{PROJECT}/locations/{answer['region']}/jobs/"), (job, answer)
    ours = emulator.received(job)

    for intended in (*(BY_ID[i] for i in SHARED), *V1_INTENDED):
        intended.normalise(ours, theirs, variables)
    _two_pools(ours, theirs)
    assert differences(_canonical(ours), _canonical(theirs)) == []
    assert KEY not in json.dumps(ours) and KEY not in json.dumps(theirs)


def test_the_document_lists_every_v1_difference() -> None:
    text = DOC.read_text()
    listed = re.findall(r"^\| `(v1-[a-z-]+)` \|", text, flags=re.M)
    assert listed == [i.id for i in V1_INTENDED]
