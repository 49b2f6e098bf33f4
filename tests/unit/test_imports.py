"""Cold-start hygiene: an AWS function imports its own provider only — no other provider or cloud SDK, nothing of the
CLI, and never ``prefect``.

The other clouds' SDKs are not installed here, so stand-in packages that are importable are put on the path: a guarded
``try: import modal`` would import the stand-in and be seen, as it would in a layer that has the SDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OTHER_CLOUDS = ("google", "azure", "modal", "coiled", "grpclib", "dask")
# prometheus-client is the cli extra's (serve's /metrics): the Lambda layer has only the aws extra.
CLI_MODULES = (
    "pushpool.entrypoints.cli",
    "pushpool.entrypoints.serve",
    "pushpool.entrypoints.prometheus",
    "prometheus_client",
    "pushpool.usecases.provision_infra",
)
NOT_ON_AWS = ("prefect", "pushpool.providers.process", "psutil")


def _loaded(tmp_path: Path, function: str, *extra_imports: str, code: str = "") -> set[str]:
    for package in OTHER_CLOUDS:  # importable stand-ins
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    code = (
        "import importlib.util, json, sys\n"
        # What the interpreter loaded before the function (a namespace package's .pth in this development venv, such
        # as functions-framework's, imports google.cloud at start-up) is not the function's cold path.
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('app', {str(ROOT / 'functions' / function / 'app.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        + "".join(f"import {module}\n" for module in extra_imports)
        + code
        + "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT / 'shared'}", "PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_DISABLED": "true"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return set(json.loads(out.stdout))


def _hits(loaded: set[str], forbidden: tuple[str, ...]) -> set[str]:
    return {m for m in loaded for f in forbidden if m == f or m.startswith(f + ".")}


# What a warm function does with an ecs:push pool: its backend and provisioner come through the registry.
THROUGH_THE_REGISTRY = (
    "from pushpool.prefect_api.models import WorkPool\n"
    "from pushpool.settings import Settings\n"
    "from pushpool.usecases.deps import Deps\n"
    "deps = Deps.from_settings(Settings.of(prefect_api_url='http://127.0.0.1:9/api', pool_types=('ecs:push',)))\n"
    "deps.backend_for_pool(WorkPool(id='p', name='p', type='ecs:push'))\n"
    "deps.provider('ecs:push').create_provisioner(region='us-east-1')\n"
)


@pytest.mark.parametrize("function", ["submit", "monitor", "provision"])
def test_an_aws_function_loads_only_its_own_provider(tmp_path: Path, function: str) -> None:
    loaded = _loaded(tmp_path, function, code=THROUGH_THE_REGISTRY)
    assert {"pushpool.providers.ecs.backend", "pushpool.providers.ecs.provisioner"} <= loaded  # loaded, lazily
    assert not _hits(loaded, OTHER_CLOUDS + NOT_ON_AWS)


# The Lambda layer holds the aws extra only: typer, rich and click are not there (httpx imports click and rich for its
# own command line when they are installed, as they are in this development environment). The check runs the function
# as in the layer: those packages cannot be imported; a pushpool module that needs one fails the import.
NOT_IN_THE_LAYER = """
import importlib.abc, sys
class NotInTheLayer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"typer", "rich", "click"}:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None
sys.meta_path.insert(0, NotInTheLayer())
"""


def test_submit_loads_nothing_the_cli_needs(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "submit", "pushpool.providers.ecs.backend")
    assert not _hits(loaded, (*CLI_MODULES, "pushpool.providers.provisioning"))
    code = (
        NOT_IN_THE_LAYER
        + "import importlib.util, json, sys\n"
        + f"spec = importlib.util.spec_from_file_location('app', {str(ROOT / 'functions' / 'submit' / 'app.py')!r})\n"
        + "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        + "import pushpool.providers.ecs.backend\n"
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    assert not _hits(set(json.loads(out.stdout)), ("typer", "rich", "click"))


def test_the_aci_submit_path_loads_no_other_cloud_sdk() -> None:
    """Submit for an ACI pool, as far as imports go: the registry, the ACI backend and its client, built — and no AWS,
    Google, Modal or Coiled SDK, no ECS or process provider, no CLI, never ``prefect`` (the real SDKs of the other
    clouds are absent or stubbed exactly as in the AWS checks above; boto3 is installed here and must stay out)."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"  # a namespace package's .pth (functions-framework's) loads google at start-up
        "from pushpool.prefect_api.models import WorkPool\n"
        "from pushpool.settings import Settings\n"
        "from pushpool.usecases.deps import Deps\n"
        "import pushpool.usecases.submit\n"
        "deps = Deps.from_settings(Settings.of(prefect_api_url='http://127.0.0.1:9/api',"
        " pool_types=('azure-container-instance:push',)))\n"
        "backend = deps.backend_for_pool(WorkPool(id='p', name='p', type='azure-container-instance:push'))\n"
        "backend._client('00000000-0000-0000-0000-000000000001', None)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "AZURE_CLIENT_ID": "", "HOME": "/nonexistent"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-1500:]
    loaded = set(json.loads(out.stdout))
    assert {"pushpool.providers.aci.backend", "azure.mgmt.containerinstance", "azure.identity"} <= loaded
    forbidden = ("boto3", "botocore", "google", "modal", "coiled", "grpclib", "dask", "aws_lambda_powertools")
    assert not _hits(loaded, forbidden + CLI_MODULES + NOT_ON_AWS + ("pushpool.providers.ecs",))


def test_the_azure_submit_function_loads_no_other_cloud_sdk(tmp_path: Path) -> None:
    """functions/azure/function_app.py at a cold start, then one submit's backend built: Azure's SDKs only."""
    for package in ("google", "modal", "coiled", "grpclib", "dask"):  # importable stand-ins, as above
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    app = ROOT / "functions" / "azure" / "function_app.py"
    code = (
        NOT_IN_THE_LAYER
        + "import importlib.util, json, sys\n"
        + "before = set(sys.modules)\n"
        + f"spec = importlib.util.spec_from_file_location('app', {str(app)!r})\n"
        + "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        + "from pushpool.entrypoints.azure_functions import azure_deps\n"
        + "from pushpool.prefect_api.models import WorkPool\n"
        + "deps, _ = azure_deps()\n"
        + "deps.backend_for_pool(WorkPool(id='p', name='p', type='azure-container-instance:push'))\n"
        + "deps.trigger.client\n"  # the delay queue's client, as the first arming builds it
        + "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    env = {
        "PYTHONPATH": f"{tmp_path}:{ROOT / 'shared'}",
        "PATH": "/usr/bin:/bin",
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "PUSHPOOL_POOL_TYPES": "azure-container-instance:push",
        "PUSHPOOL_DELAY_QUEUE_URL": "https://pushpoolst.queue.core.windows.net/pushpool-delay",
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-1500:]
    loaded = set(json.loads(out.stdout))
    assert {"azure.functions", "pushpool.providers.aci.backend", "azure.storage.queue"} <= loaded
    forbidden = ("boto3", "botocore", "aws_lambda_powertools", "google", "modal", "coiled", "grpclib", "dask")
    assert not _hits(loaded, forbidden + CLI_MODULES + NOT_ON_AWS + ("pushpool.providers.ecs",))


def test_a_modal_pool_loads_the_modal_sdk_only_when_it_talks_to_modal() -> None:
    """Rendering a modal:push run (its template and typed configuration) and building its backend load no SDK; the
    SDK is imported by the backend's calls. The submit path then loads modal and its gRPC stack, nothing of AWS."""
    pytest.importorskip("modal")
    code = (
        "import json, sys\n"
        "start = set(sys.modules)\n"  # what this venv's .pth files load at start-up (functions-framework: google)
        "from pushpool.providers import provider_for_pool_type\n"
        "provider = provider_for_pool_type('modal:push')\n"
        "provider.template('modal:push'); provider.config_model()(gpu='T4'); backend = provider.create_backend()\n"
        "before = sorted(set(sys.modules) - start)\n"
        "import pushpool.providers.modal.sdk as sdk; import modal; sdk.translate_modal_error(ValueError())\n"
        "print(json.dumps([before, sorted(set(sys.modules) - start)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = (set(x) for x in json.loads(out.stdout))
    assert not _hits(before, (*OTHER_CLOUDS, "boto3", "botocore", "prefect"))
    assert _hits(after, ("modal", "grpclib")) and not _hits(after, ("boto3", "botocore", "coiled", "dask", "prefect"))


def test_a_coiled_pool_loads_no_sdk_at_all() -> None:
    """coiled:push talks to Coiled's REST API with httpx: neither coiled nor dask is ever imported for it."""
    code = (
        "import json, sys\n"
        "from pushpool.providers import provider_for_pool_type\n"
        "provider = provider_for_pool_type('coiled:push')\n"
        "provider.template('coiled:push'); provider.config_model()(vm_types=['t3.medium'])\n"
        "provider.create_backend(); provider.create_provisioner()\n"
        "import pushpool.providers.coiled.api\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert "pushpool.providers.coiled.backend" in loaded and "httpx" in loaded
    assert not _hits(loaded, ("coiled", "dask", "distributed", "modal", "boto3", "prefect"))


# Google's function runtime: functions/gcp/main.py with a cloud-run pool's backend loaded through the registry and
# run_v2's clients imported, as the first submit does. Stand-ins for the other clouds' SDKs are importable.
NOT_ON_GCP = ("boto3", "botocore", "aws_lambda_powertools", "azure", "modal", "coiled", "grpclib", "dask", "prefect")
ON_GCP = (
    "from pushpool.prefect_api.models import WorkPool\n"
    "from pushpool.settings import Settings\n"
    "from pushpool.usecases.deps import Deps\n"
    "deps = Deps.from_settings(Settings.of(prefect_api_url='http://127.0.0.1:9/api', pool_types=('cloud-run-v2:push',"
    " 'cloud-run:push')))\n"
    "deps.backend_for_pool(WorkPool(id='p', name='p', type='cloud-run-v2:push'))\n"
    "from google.cloud import run_v2\n"
    "from google.auth.credentials import AnonymousCredentials\n"
    "from pushpool.entrypoints.gcp_delay import CloudTasksTrigger\n"  # the delay queue's client, as arming builds it
    "CloudTasksTrigger('projects/pushpool-test/locations/us-central1/queues/q', 'https://x.example/delayed',"
    " 'tasks@pushpool-test.iam.gserviceaccount.com', credentials=AnonymousCredentials()).client\n"
)


@pytest.mark.parametrize("target", ["submit", "monitor", "provision", "delayed"])
def test_the_gcp_functions_load_no_other_cloud(tmp_path: Path, target: str) -> None:
    for package in ("boto3", "botocore", "aws_lambda_powertools", "azure", "modal", "coiled", "grpclib", "dask"):
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    code = (
        "import importlib.util, json, sys\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('main', {str(ROOT / 'functions' / 'gcp' / 'main.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"assert callable(getattr(mod, {target!r}))\n"
        + ON_GCP
        + "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    site = [p for p in sys.path if p.endswith("site-packages")]
    path = os.pathsep.join([str(tmp_path), str(ROOT / "shared"), *site])
    env = {"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "NO_GCE_CHECK": "True"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-1500:]
    loaded = set(json.loads(out.stdout))
    assert "pushpool.providers.cloudrun.backend" in loaded and "google.cloud.run_v2" in loaded
    assert "google.cloud.tasks_v2" in loaded
    assert not _hits(loaded, (*NOT_ON_GCP, "pushpool.providers.ecs", "pushpool.providers.process"))
