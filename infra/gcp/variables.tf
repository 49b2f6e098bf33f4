variable "project" {
  description = "The Google Cloud project pushpool runs in (its Cloud Run jobs too, unless a pool names another)."
  type        = string
}

variable "region" {
  description = "The region of the functions, the scheduler and, by default, the Cloud Run jobs."
  type        = string
  default     = "us-central1"
}

variable "prefect_api_url" {
  description = "The Prefect API the functions call, e.g. https://prefect.example.com/api."
  type        = string
}

variable "source_archive" {
  description = "The functions' source (make build-gcp: functions/gcp/main.py, pushpool and requirements.txt, zipped)."
  type        = string
  default     = "../../.gcp-build/functions.zip"
}

variable "monitor_schedule" {
  description = "How often the monitor ticks (Cloud Scheduler cron syntax)."
  type        = string
  default     = "* * * * *"
}

variable "kms_key" {
  description = "A Cloud KMS key for the secrets, the topic and the source bucket (null: Google-managed keys)."
  type        = string
  default     = null
}

variable "image_repositories" {
  description = "The Artifact Registry Docker repositories of the jobs' images (location and repository id; project: var.project unless given). submit and monitor get roles/artifactregistry.reader on each, so the image-architecture pre-flight reads private images with their own token; an image elsewhere is read anonymously or not judged."
  type = list(object({
    location   = string
    repository = string
    project    = optional(string)
  }))
  default = []
}
