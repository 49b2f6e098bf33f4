# Punctual dispatch on Google Cloud (issue 14): a scheduled run is started at its time minus the pool's lead by a
# Cloud Tasks HTTP task, not by the monitor's next tick.
#
#   submit (Scheduled event) ─┐                     ┌─ at the run's dispatch time ─► pushpool-delayed (IAM-only)
#   monitor (look-ahead) ─────┼─► create_task ─► pushpool-delay queue   (OIDC token of pushpool-tasks)
#   delayed (re-arms a run ───┘
#            rescheduled later)
#
# Least privilege:
# * submit and monitor (and delayed, which runs as submit) may enqueue on this queue only (roles/cloudtasks.enqueuer
#   on the queue, not the project), and act as pushpool-tasks only (to have Cloud Tasks mint its OIDC token);
# * pushpool-tasks holds one role: roles/run.invoker on pushpool-delayed. Google checks its token before pushpool runs,
#   so no pushpool secret is stored in a task, and submit's public webhook is unchanged;
# * pushpool-delayed admits internal traffic only (Cloud Tasks counts as internal) and reads the Prefect key only.

locals {
  delayed_url = "https://${var.region}-${var.project}.cloudfunctions.net/pushpool-delayed"
  delay_environment = {
    PUSHPOOL_TASKS_QUEUE           = google_cloud_tasks_queue.delay.id
    PUSHPOOL_TASKS_URL             = local.delayed_url
    PUSHPOOL_TASKS_SERVICE_ACCOUNT = google_service_account.tasks.email
  }
  arming = toset(["submit", "monitor"])
}

resource "google_project_service" "cloudtasks" {
  service            = "cloudtasks.googleapis.com"
  disable_on_destroy = false
}

resource "google_cloud_tasks_queue" "delay" {
  name     = "pushpool-delay"
  location = var.region

  rate_limits {
    max_dispatches_per_second = 500 # a burst of runs scheduled for the same second is delivered at once
    max_concurrent_dispatches = 1000
  }

  # A 5xx from pushpool-delayed (Prefect unreachable, say) is retried; a run the monitor dispatched meanwhile makes
  # the retry a no-op. After 10 minutes the monitor's sweep is the guarantee.
  retry_config {
    max_attempts       = 5
    min_backoff        = "1s"
    max_backoff        = "30s"
    max_doublings      = 4
    max_retry_duration = "600s"
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }

  depends_on = [google_project_service.cloudtasks]
}

resource "google_service_account" "tasks" {
  account_id   = "pushpool-tasks"
  display_name = "pushpool's Cloud Tasks: the identity of delayed triggers, may invoke pushpool-delayed only"
}

resource "google_cloud_tasks_queue_iam_member" "enqueuer" {
  for_each = local.arming
  name     = google_cloud_tasks_queue.delay.name
  location = var.region
  role     = "roles/cloudtasks.enqueuer"
  member   = "serviceAccount:${google_service_account.function[each.key].email}"
}

# Creating a task with an OIDC token for pushpool-tasks needs iam.serviceAccounts.actAs on it.
resource "google_service_account_iam_member" "act_as_tasks" {
  for_each           = local.arming
  service_account_id = google_service_account.tasks.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.function[each.key].email}"
}

# The delayed function: the same source as the others (entry point `delayed`), running as submit (it does what submit
# does for one run, and re-arms a run rescheduled later).
resource "google_cloudfunctions2_function" "delayed" {
  name        = "pushpool-delayed"
  location    = var.region
  description = "Starts a scheduled run at its time (called by Cloud Tasks)."

  build_config {
    runtime     = "python312"
    entry_point = "delayed"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.function["submit"].email
    available_memory      = "512Mi"
    timeout_seconds       = 60
    max_instance_count    = 20
    ingress_settings      = "ALLOW_INTERNAL_ONLY"
    environment_variables = merge(local.environment, local.delay_environment)
    secret_environment_variables {
      key        = "PREFECT_API_KEY"
      project_id = var.project
      secret     = google_secret_manager_secret.prefect_api_key.secret_id
      version    = "latest"
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_secret_manager_secret_iam_member.prefect_api_key,
  ]
}

resource "google_cloud_run_service_iam_member" "delayed_invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.delayed.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.tasks.email}"
}

output "delay_queue" {
  description = "The Cloud Tasks queue of scheduled runs' delayed triggers (PUSHPOOL_TASKS_QUEUE)."
  value       = google_cloud_tasks_queue.delay.id
}

output "delayed_url" {
  description = "The function Cloud Tasks calls at a run's time (IAM-only: pushpool-tasks may invoke it)."
  value       = google_cloudfunctions2_function.delayed.service_config[0].uri
}
