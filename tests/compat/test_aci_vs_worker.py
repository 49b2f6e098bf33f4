"""Differential test (issue 16): for a table of job-variable sets, the container group pushpool creates is compared
with the one Prefect's ACI worker (prefect-azure 0.4.13) deploys for the same flow run, against the same local ARM
endpoint (bodies as the endpoint received them: pushpool's PUT, the worker's ARM deployment evaluated).

The worker runs in its own environment (``.venv-compat-azure``) through ``aci_worker_driver.py``; ``make compat-aci``
runs this. Each case makes two pools with the same variable defaults — one of type ``azure-container-instance`` on the
worker's own default template, one of type ``azure-container-instance:push`` on pushpool's — and one deployment per
pool with the case's job variables. What may differ is listed once in ``INTENDED`` with its reason (docs/aci-compat.md
shows the same list; a test keeps the two in step): each entry normalises exactly that difference away; anything else
that differs fails the case.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pushpool.providers import base_job_template
from pushpool.providers.base import is_secret_name
from pushpool.usecases.submit import submit_run

from tests.conftest import AZ_IDENTITY, AZ_REGISTRY, AZ_RG, AZ_RG_OTHER, AZ_SUB
from tests.differential import start, worker_env
from tests.helpers import PrefectHelper, make_deps

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "aci-compat.md"
KEY = "pnu_aci_compat_key"


def _name(ours: dict, theirs: dict) -> None:
    ours.pop("name", None)
    theirs.pop("name", None)


def _container_name(ours: dict, theirs: dict) -> None:
    for body in (ours, theirs):
        body["properties"]["containers"][0]["name"] = "<container>"


def _tags(ours: dict, theirs: dict) -> None:
    ours.pop("tags", None)
    theirs.pop("tags", None)


def _environment(ours: dict, theirs: dict) -> None:
    """The variables each side adds for its own reasons left out; the others compared by name, kind and value (the
    run's own ids are placeholders already: ``_anonymous``)."""
    for body in (ours, theirs):
        container = body["properties"]["containers"][0]["properties"]
        env = container.get("environmentVariables") or []
        container["environmentVariables"] = sorted(
            (
                {
                    "name": e["name"],
                    "kind": "secureValue" if "secureValue" in e else "value",
                    "value": e["secureValue"] if "secureValue" in e else e.get("value"),
                }
                for e in env
                if e["name"] not in WORKER_ONLY_ENV and e["name"] not in PUSHPOOL_ONLY_ENV
            ),
            key=lambda e: e["name"],
        )


# The worker copies its own process's Prefect settings into every container, and adds its name and the flow's.
WORKER_ONLY_ENV = {
    "PREFECT_HOME",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_SERVER_EPHEMERAL_ENABLED",
    "PREFECT__FLOW_NAME",
    "PREFECT__WORKER_NAME",
}
PUSHPOOL_ONLY_ENV: set[str] = set()


def _default_image(ours: dict, theirs: dict) -> None:
    for body in (ours, theirs):
        container = body["properties"]["containers"][0]["properties"]
        if container["image"].startswith("prefecthq/prefect:"):
            container["image"] = "<Prefect's image>"


def _registry_identity(ours: dict, theirs: dict) -> None:
    credentials = ours["properties"].get("imageRegistryCredentials") or []
    identities = {c["identity"] for c in credentials if c.get("identity")}
    if identities and "identity" in ours and "identity" not in theirs:
        assigned = set(ours["identity"]["userAssignedIdentities"])
        if assigned == identities:
            del ours["identity"]


def _secret_env(ours: dict, theirs: dict) -> None:
    """Names that look secret: a ``secureValue`` on pushpool's side, a ``value`` on the worker's (after
    ``_environment``, entries are name and kind)."""
    theirs_env = theirs["properties"]["containers"][0]["properties"]["environmentVariables"]
    plain = {e["name"] for e in theirs_env if e["kind"] == "value"}
    for e in ours["properties"]["containers"][0]["properties"]["environmentVariables"]:
        if e["kind"] == "secureValue" and e["name"] in plain and is_secret_name(e["name"]):
            e["kind"] = "value"


def _gpu(ours: dict, theirs: dict) -> None:
    requests = ours["properties"]["containers"][0]["properties"]["resources"]["requests"]
    if "gpu" not in theirs["properties"]["containers"][0]["properties"]["resources"]["requests"]:
        requests.pop("gpu", None)


# (id, what differs, why, normaliser)
INTENDED: list[tuple[str, str, str, Any]] = [
    (
        "name",
        "the container group's name",
        "pushpool names the group from the attempt (run id + the claim's state), "
        "so a retried submit finds it and a retry of the run gets a new one; the worker names it from the flow and the "
        "run id",
        _name,
    ),
    (
        "container-name",
        "the container's name",
        "the worker's template leaves it to ARM's uniqueString(resourceGroup()"
        ".id) — the same name for every container of the resource group; pushpool names it `prefect`",
        _container_name,
    ),
    (
        "tags",
        "tags",
        "pushpool tags each group with the run, the attempt and the run's labels (Azure's tag rules "
        "applied); the worker sets none",
        _tags,
    ),
    (
        "environment",
        "run-specific environment values",
        "the same variables by name, kind (value or secureValue) and value, the run's own ids and names replaced "
        "by placeholders. The worker also copies its own process's Prefect settings "
        "(PREFECT_HOME, PREFECT_SERVER_*) and adds PREFECT__FLOW_NAME and PREFECT__WORKER_NAME; pushpool has no "
        "worker process whose settings would mean anything in the container",
        _environment,
    ),
    (
        "secret-env",
        "environment variables that hold credentials",
        "the worker sends PREFECT_API_KEY and PREFECT_API_AUTH_STRING as secureValues (its ENV_SECRETS); pushpool "
        "also sends every variable whose name looks secret (*SECRET*, *TOKEN*, *PASSWORD*, "
        "*CREDENTIAL*, *API_KEY* …) as a secureValue, which ARM never returns to a reader of the group; the container "
        "gets the same values",
        _secret_env,
    ),
    (
        "default-image",
        "the image when none is set",
        "the worker uses its own Prefect version's image (prefecthq/prefect:<version>-python<X.Y>); pushpool never "
        "imports prefect and uses prefecthq/prefect:3-latest",
        _default_image,
    ),
    (
        "registry-identity",
        "the group's identity when only image_registry names one",
        "ACI pulls with a managed identity only if the group has that identity: pushpool adds the registry's identity "
        "to the group's user-assigned identities; the worker sends it in imageRegistryCredentials alone, so its pull "
        "fails unless `identities` repeats it",
        _registry_identity,
    ),
    (
        "gpu",
        "GPU requests",
        "the worker accepts gpu_count and gpu_sku but never sends them (neither its template nor its "
        "prepare_for_flow_run uses them); pushpool requests them when both are set (ACI's GpuResource needs both: "
        "gpu_count alone requests no GPU on either side)",
        _gpu,
    ),
    (
        "aci-credentials-variable",
        "aci_credentials set by a deployment's or a flow run's job variables",
        "the worker signs the group with whatever block the job variables name; pushpool refuses the run before "
        "anything is sent, naming the field: a deployment author could otherwise sign their group with another "
        "pool's service principal (docs/security.md). The pool's own block (its template's default or literal) is "
        "used as the worker uses it",
        lambda ours, theirs: None,
    ),
]


SUBNET = f"/subscriptions/{AZ_SUB}/resourceGroups/{AZ_RG}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
BLOCK = {"client_id": "app-compat", "tenant_id": "tenant-compat", "client_secret": "compat-secret"}

# Every field of the base template's job_configuration, with a value that changes what the group is: each is tried
# as a job variable (a deployment's) and as a literal written into the pool's job_configuration (both pools).
FIELDS: dict[str, Any] = {
    "image": f"{AZ_REGISTRY}/flows:2",
    "command": "python -m prefect.engine --flag 'two words'",
    "entrypoint": "/usr/bin/env",
    "cpu": 2,
    "memory": 3.5,
    "env": {"TEAM": "données-ü", "EMPTY": "", "NUMBER": "7"},
    "labels": {"team": "data"},
    "name": "custom-name",
    "identities": [AZ_IDENTITY],
    "image_registry": {"registry_url": AZ_REGISTRY, "identity": AZ_IDENTITY},
    "subnet_ids": [SUBNET],
    "dns_servers": ["10.0.0.10", "10.0.0.11"],
    "gpu_count": 1,
    "gpu_sku": "V100",
    "stream_output": True,
    "keep_container_group": True,
    "task_start_timeout_seconds": 100,
    "task_watch_poll_interval": 0.05,
    "resource_group_name": AZ_RG_OTHER,
    "subscription_id": AZ_SUB,
    "aci_credentials": BLOCK,
}


def _literal(field: str, value: Any):
    def edit(template: dict) -> None:
        template["job_configuration"][field] = value

    return edit


def _arm(edit_resource):
    """An edit of the pool's arm_template's container-group resource (both pools)."""

    def edit(template: dict) -> None:
        edit_resource(template["job_configuration"]["arm_template"]["resources"][0])

    return edit


def _container(resource: dict) -> dict:
    return resource["properties"]["containers"][0]["properties"]


def _set(path_edit):
    return _arm(path_edit)


def _arm_image(r: dict) -> None:
    _container(r)["image"] = "literal.example/in-template:1"


def _arm_cpu_memory(r: dict) -> None:
    _container(r)["resources"]["requests"].update({"cpu": 3, "memoryInGB": 2.5})


def _arm_env(r: dict) -> None:
    _container(r)["environmentVariables"] = [{"name": "FROM_TEMPLATE", "value": "x"}]


def _arm_location(r: dict) -> None:
    r["location"] = "northeurope"


def _arm_command(r: dict) -> None:
    _container(r)["command"] = ["python", "literal.py"]


def _arm_registry(r: dict) -> None:
    r["properties"]["imageRegistryCredentials"] = [{"server": "other.azurecr.io", "username": "u", "password": "p"}]


def _arm_expressions(r: dict) -> None:
    r["tags"] = {
        "where": "[concat('rg-', resourceGroup().name, '-', toUpper(parameters('location')))]",
        "fmt": "[format('{0}/{1}', subscription().subscriptionId, 'x')]",
        "lower": "[toLower('ABC')]",
        "escaped": "[[not an expression]",
    }
    _container(r)["resources"]["requests"]["cpu"] = "[add(1, 1)]"


def _arm_variables(template: dict) -> None:
    arm = template["job_configuration"]["arm_template"]
    arm["variables"] = {"osType": "[concat('Lin', 'ux')]"}
    arm["resources"][0]["properties"]["osType"] = "[variables('osType')]"


def _arm_gpu(r: dict) -> None:
    _container(r)["resources"]["requests"]["gpu"] = {"count": 1, "sku": "K80"}


def _pool_env(template: dict) -> None:
    template["variables"]["properties"]["env"]["default"] = {"LEVEL": "pool", "POOL_ONLY": "p", "EMPTY": ""}


def _pool_credentials(template: dict) -> None:
    template["variables"]["properties"]["aci_credentials"]["default"] = BLOCK


def _cases() -> list[tuple[str, dict, Any, dict | None, str | None]]:
    """(id, deployment job variables, edit of both pools' templates, flow run job variables, documented refusal)."""
    cases: list[tuple[str, dict, Any, dict | None, str | None]] = [("defaults", {}, None, None, None)]
    for field, value in FIELDS.items():
        refused = "aci-credentials-variable" if field == "aci_credentials" else None
        cases.append((f"variable-{field}", {field: value}, None, None, refused))
        cases.append((f"literal-{field}", {}, _literal(field, value), None, None))
    cases += [
        ("gpu-count-without-sku", {"gpu_count": 1}, None, None, None),
        ("command-empty", {"command": ""}, None, None, None),
        ("entrypoint-empty", {"entrypoint": ""}, None, None, None),
        ("entrypoint-null", {"entrypoint": None}, None, None, None),
        ("env-null-unsets", {"env": {"PREFECT__FLOW_RUN_ID": None, "KEEP": "k"}}, None, None, None),
        (
            "secret-env",
            {"env": {"PREFECT_API_KEY": "pnu_jobs", "PREFECT_API_AUTH_STRING": "admin:pass", "DB_PASSWORD": "pw"}},
            None,
            None,
            None,
        ),
        ("env-three-levels", {"env": {"LEVEL": "deployment", "DEP": "d"}}, _pool_env, {"env": {"LEVEL": "run"}}, None),
        ("labels-two-levels", {"labels": {"a": "dep"}}, None, {"labels": {"a": "run", "b": "ü"}}, None),
        ("credentials-pool", {}, _pool_credentials, None, None),
        (
            "registry-password",
            {"image": "other.io/x:1", "image_registry": {"registry_url": "other.io", "username": "u", "password": "p"}},
            None,
            None,
            None,
        ),
        ("arm-image", {}, _arm(_arm_image), None, None),
        ("arm-image-and-variable", {"image": "x.io/y:2"}, _arm(_arm_image), None, None),
        ("arm-cpu-memory", {"cpu": 4}, _arm(_arm_cpu_memory), None, None),
        ("arm-env", {"env": {"A": "1"}}, _arm(_arm_env), None, None),
        ("arm-location", {}, _arm(_arm_location), None, None),
        ("arm-command", {}, _arm(_arm_command), None, None),
        ("arm-registry", {"image_registry": FIELDS["image_registry"]}, _arm(_arm_registry), None, None),
        ("arm-expressions", {}, _arm(_arm_expressions), None, None),
        ("arm-variables", {}, _arm_variables, None, None),
        ("arm-gpu", {}, _arm(_arm_gpu), None, None),
    ]
    return cases


@pytest.fixture(scope="module")
def worker(arm, prefect_api: str, tmp_path_factory: pytest.TempPathFactory):
    env = worker_env(prefect_api, KEY, tmp_path_factory.mktemp("aci-worker"), ARM_URL=arm.url, ARM_CERT=str(arm.cert))
    yield from start(os.environ["PUSHPOOL_AZURE_WORKER_PYTHON"], Path(__file__).with_name("aci_worker_driver.py"), env)


def _pools(prefect: PrefectHelper, worker, edit) -> tuple[str, str]:
    defaults = {"subscription_id": AZ_SUB, "resource_group_name": AZ_RG, "task_watch_poll_interval": 0.05}
    theirs = copy.deepcopy(worker({"template": True})["template"])
    ours = copy.deepcopy(base_job_template("azure-container-instance:push"))
    for template in (theirs, ours):
        for key, value in defaults.items():
            template["variables"]["properties"][key]["default"] = value
        if edit is not None:
            edit(template)
    ours["job_configuration"]["allowed_identities"] = [AZ_IDENTITY]  # the operator's list (the worker has none)
    names = prefect.unique("aci-worker"), prefect.unique("aci-push")
    prefect.create_pool(names[0], "azure-container-instance", base_job_template=theirs)
    prefect.create_pool(names[1], "azure-container-instance:push", base_job_template=ours)
    return names


def _exit_when_deployed(arm, before: int, stop: threading.Event) -> None:
    """The worker watches its container until it terminates: end it once ARM has it."""
    while not stop.is_set():
        for name, _ in arm.deployed[before:]:
            for key, group in list(arm.groups.items()):
                if key[2] == name and (group.container or {}).get("state") == "Running":
                    arm.exit(
                        group.body.get("id")
                        or f"/subscriptions/{key[0]}/resourceGroups/{group.rg}/providers/"
                        f"Microsoft.ContainerInstance/containerGroups/{name}",
                        0,
                        [],
                    )
        time.sleep(0.02)


def _anonymous(body: dict, prefect: PrefectHelper, run_id: str, deployment_id: str) -> dict:
    """``body`` with what names its own run, deployment and flow replaced by placeholders (each side has its own)."""
    run = prefect.read_run(run_id)
    deployment = prefect.json("GET", f"/deployments/{deployment_id}")
    text = json.dumps(body, ensure_ascii=False)
    for value, placeholder in (
        (run_id, "<run id>"),
        (deployment_id, "<deployment id>"),
        (deployment["name"], "<deployment name>"),
        (run["name"], "<run name>"),
    ):
        text = text.replace(value, placeholder)
    return json.loads(text)


@pytest.mark.parametrize(
    ("case", "variables", "edit", "run_variables", "refused"), _cases(), ids=[c[0] for c in _cases()]
)
def test_the_group_matches_the_workers_but_for_the_intended_differences(
    case: str,
    variables: dict,
    edit: Any,
    run_variables: dict | None,
    refused: str | None,
    arm,
    worker,
    prefect: PrefectHelper,
    prefect_api: str,
    tmp_path: Path,
    aci_options,
) -> None:
    from tests.arm_emulator import FakeCredential

    worker_pool, push_pool = _pools(prefect, worker, edit)
    run_body = {"job_variables": run_variables} if run_variables else {}
    try:
        deps = make_deps(prefect_api, tmp_path, prefect_api_key=KEY)
        deps.backend_options["aci"] = {**aci_options, "block_credential": FakeCredential()}
        deployment_ours = prefect.create_deployment(push_pool, job_variables=variables)
        run_ours = prefect.create_run(deployment_ours, **run_body)
        run = deps.orchestrator.read_flow_run(run_ours)
        outcome = submit_run(deps, run, deps.orchestrator.read_work_pool(push_pool), trigger="compat")

        deployment_theirs = prefect.create_deployment(worker_pool, job_variables=variables)
        run_theirs = prefect.create_run(deployment_theirs, **run_body)
        before, stop = len(arm.deployed), threading.Event()
        watcher = threading.Thread(target=_exit_when_deployed, args=(arm, before, stop), daemon=True)
        watcher.start()
        try:
            answer = worker({"pool": worker_pool, "run_id": run_theirs})
        finally:
            stop.set()
            watcher.join()
        assert answer["ok"], answer
        if refused is not None:  # documented: pushpool refuses what the worker runs (the reason is in the doc)
            assert outcome.outcome != "submitted", outcome
            assert refused in {i for i, *_ in INTENDED}
            return
        assert outcome.outcome == "submitted", outcome
        ours = _anonymous(copy.deepcopy(arm.group(outcome.job_id).body), prefect, run_ours, deployment_ours)
        theirs = _anonymous(copy.deepcopy(arm.deployed[before][1]), prefect, run_theirs, deployment_theirs)
        for _, _, _, normalise in INTENDED:
            normalise(ours, theirs)
        assert ours == theirs
    finally:
        for name in (worker_pool, push_pool):
            prefect.request("DELETE", f"/work_pools/{name}")


def test_there_are_at_least_25_cases_and_every_field_both_ways() -> None:
    ids = [c[0] for c in _cases()]
    assert len(ids) >= 25
    template = base_job_template("azure-container-instance:push")["job_configuration"]
    for field in set(template) - {"arm_template", "location", "max_run_time_seconds", "allowed_identities"}:
        assert f"variable-{field}" in ids and f"literal-{field}" in ids, field


def test_the_document_lists_the_intended_differences() -> None:
    text = DOC.read_text()
    for id_, what, _, _ in INTENDED:
        assert f"`{id_}`" in text and what in text, id_
