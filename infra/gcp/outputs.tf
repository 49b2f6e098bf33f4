output "submit_url" {
  description = "Give it to provision as the submit URL (PUSHPOOL_SUBMIT_URL): Prefect's webhook calls it."
  value       = google_cloudfunctions2_function.function["submit"].service_config[0].uri
}

output "provision_url" {
  description = "provision, for callers with roles/run.invoker on it."
  value       = google_cloudfunctions2_function.function["provision"].service_config[0].uri
}

output "jobs_service_account" {
  description = "The service account Cloud Run pools should run jobs as (the pool's service_account_name)."
  value       = google_service_account.jobs.email
}
