# pushpool on Google Cloud: submit (public HTTPS, pushpool checks Prefect's bearer token), provision (IAM-only) and
# monitor (Cloud Scheduler → Pub/Sub → CloudEvent), each with a service account holding only the roles it needs.
# The Prefect API key and the webhook token live in Secret Manager; set their values with
#   gcloud secrets versions add pushpool-prefect-api-key --data-file=-   (or the console) after `terraform apply`.

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0, < 7.0"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

locals {
  services = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ]
  functions = {
    submit    = "Turns a Prefect flow-run event into a Cloud Run job."
    monitor   = "Reconciles flow runs with their Cloud Run executions."
    provision = "Creates push pools, their Webhook block and automation."
  }
  environment = {
    PREFECT_API_URL      = var.prefect_api_url
    PUSHPOOL_POOL_TYPES  = "cloud-run-v2:push,cloud-run:push"
    PUSHPOOL_SUBMIT_URL  = "https://${var.region}-${var.project}.cloudfunctions.net/pushpool-submit"
    GOOGLE_CLOUD_PROJECT = var.project
  }
}

resource "google_project_service" "enabled" {
  for_each           = toset(local.services)
  service            = each.value
  disable_on_destroy = false
}

# -- identities --------------------------------------------------------------------------------------------------

resource "google_service_account" "function" {
  for_each     = local.functions
  account_id   = "pushpool-${each.key}"
  display_name = "pushpool ${each.key}: ${each.value}"
}

resource "google_service_account" "jobs" {
  account_id   = "pushpool-jobs"
  display_name = "pushpool's Cloud Run jobs (the flows): reads the Prefect API key only"
}

# submit and monitor create, run, follow, cancel and delete Cloud Run jobs that run as pushpool-jobs: a custom role with
# exactly the Cloud Run Admin API v2 calls of shared/pushpool/providers/cloudrun/backend.py (tests/unit/
# test_infra_policies.py holds the two together), not roles/run.developer, which also deploys, updates and deletes
# every Cloud Run service of the project. Cloud Run jobs take no IAM Conditions (no resource.name), so the role holds
# on every job of the project: to keep pushpool from other teams' jobs, give it a project of its own.
resource "google_project_iam_custom_role" "jobs" {
  project     = var.project
  role_id     = "pushpoolJobs"
  title       = "pushpool jobs"
  description = "pushpool submit and monitor: create, run, follow, cancel and delete the Cloud Run jobs of flow runs"
  permissions = [
    "run.executions.cancel",
    "run.executions.get",
    "run.executions.list",
    "run.jobs.create",
    "run.jobs.delete",
    "run.jobs.get",
    "run.jobs.list",
    "run.jobs.run",
    "run.operations.get",
    "run.tasks.list",
  ]
}

resource "google_project_iam_member" "run_jobs" {
  for_each = toset(["submit", "monitor"])
  project  = var.project
  role     = google_project_iam_custom_role.jobs.id
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

resource "google_service_account_iam_member" "act_as_jobs" {
  for_each           = toset(["submit", "monitor"])
  service_account_id = google_service_account.jobs.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.function[each.key].email}"
}

# The image-architecture pre-flight (submit, and monitor when it dispatches) reads a private image's manifest with the
# function's own token: read access to the jobs' image repositories only, never to the project's every repository.
resource "google_artifact_registry_repository_iam_member" "read_images" {
  for_each = {
    for pair in setproduct(["submit", "monitor"], var.image_repositories) :
    "${pair[0]}:${coalesce(pair[1].project, var.project)}/${pair[1].location}/${pair[1].repository}" => {
      function = pair[0]
      project  = coalesce(pair[1].project, var.project)
      location = pair[1].location
      name     = pair[1].repository
    }
  }
  project    = each.value.project
  location   = each.value.location
  repository = each.value.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.function[each.value.function].email}"
}

# The monitor writes a crashed run's last log lines to Prefect.
resource "google_project_iam_member" "monitor_logs" {
  project = var.project
  role    = "roles/logging.viewer"
  member  = "serviceAccount:${google_service_account.function["monitor"].email}"
}

# -- secrets -------------------------------------------------------------------------------------------------------

resource "google_secret_manager_secret" "prefect_api_key" {
  secret_id = "pushpool-prefect-api-key"
  replication {
    auto {
      dynamic "customer_managed_encryption" {
        for_each = var.kms_key == null ? [] : [var.kms_key]
        content {
          kms_key_name = customer_managed_encryption.value
        }
      }
    }
  }
  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret" "webhook_token" {
  secret_id = "pushpool-webhook-token"
  replication {
    auto {
      dynamic "customer_managed_encryption" {
        for_each = var.kms_key == null ? [] : [var.kms_key]
        content {
          kms_key_name = customer_managed_encryption.value
        }
      }
    }
  }
  depends_on = [google_project_service.enabled]
}

# Each function reads exactly the secrets it needs; the jobs read the Prefect key (their secretKeyRef).
resource "google_secret_manager_secret_iam_member" "prefect_api_key" {
  for_each  = { for who in ["submit", "monitor", "provision", "jobs"] : who => who }
  secret_id = google_secret_manager_secret.prefect_api_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.key == "jobs" ? google_service_account.jobs.email : google_service_account.function[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "webhook_token" {
  for_each  = toset(["submit", "provision"])
  secret_id = google_secret_manager_secret.webhook_token.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function[each.key].email}"
}

# -- source --------------------------------------------------------------------------------------------------------

resource "google_storage_bucket" "source" {
  #checkov:skip=CKV_GCP_62:build artefacts only; reads and writes are in Cloud Audit Logs
  name                        = "${var.project}-pushpool-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  versioning {
    enabled = true
  }
  dynamic "encryption" {
    for_each = var.kms_key == null ? [] : [var.kms_key]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

resource "google_storage_bucket_object" "source" {
  name   = "functions-${filemd5(var.source_archive)}.zip"
  bucket = google_storage_bucket.source.name
  source = var.source_archive
}

# -- the monitor's tick ---------------------------------------------------------------------------------------------

resource "google_pubsub_topic" "monitor" {
  name         = "pushpool-monitor"
  kms_key_name = var.kms_key
  depends_on   = [google_project_service.enabled]
}

resource "google_service_account" "scheduler" {
  account_id   = "pushpool-scheduler"
  display_name = "pushpool's Cloud Scheduler job: publishes the monitor's tick"
}

resource "google_pubsub_topic_iam_member" "scheduler_publishes" {
  topic  = google_pubsub_topic.monitor.id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_scheduler_job" "monitor" {
  name     = "pushpool-monitor"
  schedule = var.monitor_schedule
  region   = var.region
  pubsub_target {
    topic_name = google_pubsub_topic.monitor.id
    data       = base64encode("tick")
  }
  depends_on = [google_project_service.enabled]
}

# -- the functions -------------------------------------------------------------------------------------------------

resource "google_cloudfunctions2_function" "function" {
  #checkov:skip=CKV_GCP_124:submit is called by the Prefect server, provision by operators with roles/run.invoker (ALLOW_ALL); monitor is internal
  for_each    = local.functions
  name        = "pushpool-${each.key}"
  location    = var.region
  description = each.value

  build_config {
    runtime     = "python312"
    entry_point = each.key
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.function[each.key].email
    available_memory      = "512Mi"
    timeout_seconds       = each.key == "monitor" ? 300 : 60
    max_instance_count    = each.key == "submit" ? 20 : 1
    ingress_settings      = each.key == "monitor" ? "ALLOW_INTERNAL_ONLY" : "ALLOW_ALL"
    environment_variables = contains(local.arming, each.key) ? merge(local.environment, local.delay_environment) : local.environment # tasks.tf
    secret_environment_variables {
      key        = "PREFECT_API_KEY"
      project_id = var.project
      secret     = google_secret_manager_secret.prefect_api_key.secret_id
      version    = "latest"
    }
    dynamic "secret_environment_variables" {
      for_each = each.key == "monitor" ? [] : [1]
      content {
        key        = "PUSHPOOL_WEBHOOK_TOKEN"
        project_id = var.project
        secret     = google_secret_manager_secret.webhook_token.secret_id
        version    = "latest"
      }
    }
  }

  dynamic "event_trigger" {
    for_each = each.key == "monitor" ? [1] : []
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = google_pubsub_topic.monitor.id
      retry_policy          = "RETRY_POLICY_DO_NOT_RETRY"
      service_account_email = google_service_account.scheduler.email
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_secret_manager_secret_iam_member.prefect_api_key,
    google_secret_manager_secret_iam_member.webhook_token,
  ]
}

# Prefect's call-webhook automation cannot sign requests with a Google identity: submit is invoked without IAM and
# checks Prefect's bearer token itself (or a Standard Webhooks signature). provision stays IAM-only.
resource "google_cloud_run_service_iam_member" "submit_public" {
  location = var.region
  service  = google_cloudfunctions2_function.function["submit"].name
  role     = "roles/run.invoker"
  member   = "allUsers" #checkov:skip=CKV_GCP_102:Prefect's webhook cannot present a Google identity; pushpool authenticates every call with its bearer token
}

resource "google_cloud_run_service_iam_member" "monitor_trigger" {
  location = var.region
  service  = google_cloudfunctions2_function.function["monitor"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}
