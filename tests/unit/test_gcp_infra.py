"""infra/gcp/tasks.tf, read as text (no HCL parser in the test environment; ``make validate`` runs checkov on it):
the delay queue's permissions are granted on the queue and on the tasks' service account, never on the project, and
the tasks' identity may invoke the delayed function only."""

from __future__ import annotations

import re
from pathlib import Path

INFRA = Path(__file__).resolve().parents[2] / "infra" / "gcp"
TASKS = (INFRA / "tasks.tf").read_text()


def _resource(kind: str, name: str) -> str:
    found = re.search(rf'^resource "{kind}" "{name}" {{\n(.*?)^}}', TASKS, re.S | re.M)
    assert found, f"{kind}.{name} is missing"
    return found.group(1)


def test_enqueuing_is_granted_on_the_delay_queue_only() -> None:
    enqueuer = _resource("google_cloud_tasks_queue_iam_member", "enqueuer")
    assert 'role     = "roles/cloudtasks.enqueuer"' in enqueuer
    assert "google_cloud_tasks_queue.delay.name" in enqueuer
    every = "".join(p.read_text() for p in INFRA.glob("*.tf"))
    project_roles = re.findall(r'resource "google_project_iam_member"[^}]*?role\s*=\s*"([^"]+)"', every, re.S)
    assert not [r for r in project_roles if "cloudtasks" in r or r == "roles/iam.serviceAccountUser"]


def test_the_tasks_identity_invokes_the_delayed_function_only_and_is_acted_as_by_the_arming_functions() -> None:
    invokers = re.findall(r'resource "google_cloud_run_service_iam_member" "(\w+)" {\n(.*?)^}', TASKS, re.S | re.M)
    assert [name for name, _ in invokers] == ["delayed_invoker"]
    body = invokers[0][1]
    assert "google_cloudfunctions2_function.delayed.name" in body
    assert "google_service_account.tasks.email" in body and 'role     = "roles/run.invoker"' in body
    act_as = _resource("google_service_account_iam_member", "act_as_tasks")
    assert "google_service_account.tasks.name" in act_as
    assert re.search(r'arming\s*=\s*toset\(\["submit", "monitor"\]\)', TASKS)


def test_the_delayed_function_is_internal_only_and_gets_no_webhook_token() -> None:
    delayed = _resource("google_cloudfunctions2_function", "delayed")
    assert 'ingress_settings      = "ALLOW_INTERNAL_ONLY"' in delayed
    assert 'entry_point = "delayed"' in delayed
    assert "webhook_token" not in delayed


def test_images_are_readable_in_the_listed_repositories_only_by_the_functions_that_submit() -> None:
    """The image-architecture pre-flight reads private images: ``artifactregistry.reader`` on each repository of
    ``image_repositories`` for submit and monitor, never on the project."""
    main = (INFRA / "main.tf").read_text()
    found = re.search(
        r'^resource "google_artifact_registry_repository_iam_member" "read_images" \{\n(.*?)^\}', main, re.S | re.M
    )
    assert found, "read_images is missing"
    body = found.group(1)
    assert 'role       = "roles/artifactregistry.reader"' in body
    assert 'setproduct(["submit", "monitor"], var.image_repositories)' in body
    assert "google_service_account.function[each.value.function].email" in body
    every = "".join(p.read_text() for p in INFRA.glob("*.tf"))
    project_roles = re.findall(r'resource "google_project_iam_member"[^}]*?role\s*=\s*"([^"]+)"', every, re.S)
    assert not [r for r in project_roles if "artifactregistry" in r]
    assert 'variable "image_repositories"' in (INFRA / "variables.tf").read_text()


def test_a_key_mode_pools_job_role_is_the_functions_job_role() -> None:
    """A Cloud Run pool provisioned with ``--credentials key`` signs the same calls as the functions (infra/gcp's
    ``pushpoolJobs``): its custom role holds exactly those permissions, no more (providers/cloudrun/provisioner.py)."""
    from pushpool.providers.cloudrun.provisioner import JOB_PERMISSIONS

    main = (INFRA / "main.tf").read_text()
    found = re.search(r'role_id\s*=\s*"pushpoolJobs".*?permissions\s*=\s*\[(.*?)\]', main, re.S)
    assert found, "infra/gcp/main.tf has no pushpoolJobs role"
    assert sorted(JOB_PERMISSIONS) == sorted(re.findall(r'"([^"]+)"', found.group(1)))
