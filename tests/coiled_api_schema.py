"""The bodies of Coiled's REST API as its SDK (coiled 1.135.6) sends them: every field name and its JSON type, written
down from the SDK's source, so the local Coiled server (tests/coiled_emulator.py) refuses a body Coiled's own client
would never send — a field it does not know, a value of another type, options of two clouds at once — with 400.

Sources: ``coiled/cli/batch/run.py`` ``_batch_run`` (the job spec of ``POST /api/v2/jobs/compressed``),
``coiled/v2/core.py`` ``CloudV2._create_cluster`` (``POST /api/v2/clusters/account/<ws>/``; ``options`` are
``coiled.types`` ``AWSOptions``/``GCPOptions``/``AzureOptions``, checked as ``validate_backend_options`` does),
``coiled/core.py`` ``Cloud._create_software_environment_v2`` (``POST /api/v2/software-environment/account/<ws>``).
"""

from __future__ import annotations

from typing import Any

STR, INT, NUM, BOOL, LIST, DICT, NONE = str, int, (int, float), bool, list, dict, type(None)
STR_MAP = "str-map"  # an object of strings
STR_LIST = "str-list"
INT_LIST = "int-list"

JOB = {
    "user_command": (STR,),
    "user_files": (LIST,),
    "task_array_ntasks": (INT,),
    "task_array": (INT_LIST,),
    "scheduler_task_array": (INT_LIST,),
    "env_vars": (STR_MAP,),
    "secret_env_vars": (STR_MAP,),
    "task_map_env_vars_and_vals": (LIST,),
    "task_map_env_var": (STR,),
    "task_map_env_vals": (STR_LIST,),
    "wait_for_ready_cluster": (BOOL, NONE),
    "workdir": (STR, NONE),
    "pipe_to_files": (BOOL,),
    "host_setup": (STR, NONE),
    "job_timeout_seconds": (NUM, NONE),
    "run_in_container": (BOOL,),
    "max_retries": (INT,),
    "workspace": (STR,),
}
JOB_REQUIRED = ("user_command", "workspace")

CLUSTER = {
    "name": (STR,),
    "workers": (INT,),
    "worker_instance_types": (STR_LIST, NONE),
    "scheduler_instance_types": (STR_LIST, NONE),
    "worker_options": (DICT, NONE),
    "worker_class": (STR, NONE),
    "worker_disk_size": (INT, NONE),
    "worker_disk_throughput": (INT, NONE),
    "worker_disk_config": (DICT, NONE),
    "scheduler_disk_size": (INT, NONE),
    "scheduler_disk_config": (DICT, NONE),
    "scheduler_options": (DICT, NONE),
    "environ": (STR_MAP, NONE),
    "tags": (STR_MAP, NONE),
    "dask_config": (DICT, NONE),
    "private_to_creator": (BOOL, NONE),
    "env_id": (INT, NONE),
    "env_name": (STR, NONE),
    "extra_worker_on_scheduler": (BOOL, NONE),
    "n_worker_specs_per_host": (INT, NONE),
    "use_aws_creds_endpoint": (BOOL,),
    "custom_subdomain": (STR, NONE),
    "batch_job_ids": (INT_LIST, NONE),
    "extra_user_container": (STR, NONE),
    "extra_user_container_ignore_entrypoint": (BOOL, NONE),
    "scheduler_sidecars": (LIST, NONE),
    "worker_sidecars": (LIST, NONE),
    "host_setup_script": (STR, NONE),
    "pause_on_exit": (BOOL, NONE),
    "skip_ssd_mount": (BOOL, NONE),
    "cluster_timeout_seconds": (INT, NONE),
    "coiled_cloud_env_image": (STR, NONE),
    "filestores_to_attach": (LIST, NONE),
    "local_versions": (DICT,),
    "options": (DICT,),
}
CLUSTER_REQUIRED = ("name",)

_COMMON_OPTIONS = {
    "region_name": (STR, NONE), "zone_name": (STR, NONE), "spot": (BOOL, NONE),
    "spot_on_demand_fallback": (BOOL, NONE), "spot_replacement": (BOOL, NONE), "multizone": (BOOL, NONE),
    "multizone_allow_cross_zone": (BOOL, NONE), "use_dashboard_public_ip": (BOOL, NONE),
    "use_dashboard_https": (BOOL, NONE), "send_prometheus_metrics": (BOOL, NONE), "prometheus_write": (DICT, NONE),
    "network_volumes": (LIST, NONE), "docker_shm_size": (STR, NONE), "capacity_retry_timeout_seconds": (INT, NONE),
    "firewall_spec": (DICT,),
}  # fmt: skip
CLOUD_OPTIONS = {
    "aws": {"keypair_name": (STR, NONE), "use_placement_group": (BOOL, NONE),
            "use_worker_placement_group": (BOOL, NONE), "use_efa": (BOOL, NONE), "use_worker_efa": (BOOL, NONE),
            "ami_version": (STR, NONE), "capacity_reservation_id": (STR, NONE),
            "capacity_reservation_group_arn": (STR, NONE)},
    "gcp": {"scheduler_accelerator_count": (INT, NONE), "scheduler_accelerator_type": (STR, NONE),
            "worker_accelerator_count": (INT, NONE), "worker_accelerator_type": (STR, NONE)},
    "azure": {"scheduler_ephemeral_os_disk": (BOOL, NONE), "worker_ephemeral_os_disk": (BOOL, NONE)},
}  # fmt: skip

SOFTWARE_ENVIRONMENT = {
    "name": (STR, NONE),
    "container": (STR, NONE),
    "force_rebuild": (BOOL, NONE),
    "md5": (STR,),
    "use_entrypoint": (BOOL, NONE),
    "gpu_enabled": (BOOL,),
    "architecture": (STR,),
    "region_name": (STR, NONE),
    "enable_experimental_installer": (BOOL,),
    "lockfile_content": (STR, NONE),
    "lockfile_name": (STR, NONE),
    "packages": (LIST,),
    "raw_conda": (DICT, NONE),
    "raw_pip": (STR_LIST, NONE),
}


def _is(value: Any, kind: Any) -> bool:
    if kind == STR_MAP:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if kind == STR_LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == INT_LIST:
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if kind is INT or kind is NUM:
        return isinstance(value, kind) and not isinstance(value, bool)
    return isinstance(value, kind)


def problems(body: Any, fields: dict[str, tuple], required: tuple[str, ...] = (), where: str = "") -> list[str]:
    """What Coiled's client would never send in ``body``: unknown fields, wrong types, missing required fields."""
    if not isinstance(body, dict):
        return [f"{where or 'the body'} is not a JSON object"]
    found = [f"{where}{k}: required" for k in required if k not in body]
    for key, value in body.items():
        kinds = fields.get(key)
        if kinds is None:
            found.append(f"{where}{key}: not a field Coiled's API takes")
        elif not any(_is(value, kind) for kind in kinds):
            found.append(f"{where}{key}: {type(value).__name__} {value!r:.60} is not of its type")
    return found


def cluster_problems(body: Any) -> list[str]:
    found = problems(body, CLUSTER, CLUSTER_REQUIRED)
    options = body.get("options") if isinstance(body, dict) else None
    if isinstance(options, dict):
        clouds = [c for c, keys in CLOUD_OPTIONS.items() if set(options) & set(keys)]
        if len(clouds) > 1:
            found.append(f"options: keys of more than one cloud ({', '.join(clouds)})")
        every = {**_COMMON_OPTIONS, **{k: v for keys in CLOUD_OPTIONS.values() for k, v in keys.items()}}
        found += problems(options, every, where="options.")
    return found


def job_problems(body: Any) -> list[str]:
    return problems(body, JOB, JOB_REQUIRED)


def software_environment_problems(body: Any) -> list[str]:
    return problems(body, SOFTWARE_ENVIRONMENT, ("name", "md5", "architecture"))
