"""What ``coiled.batch.run`` (the coiled SDK 1.135.6, which prefect-coiled's worker calls) sends for one flow run,
built without the SDK: the job spec, the software environment of the job's cluster and the cluster request.

Each rule below is the SDK's, for a batch job of one task (the task runs on the cluster's only VM, the scheduler):

* ``cpu``/``memory``/``gpu``/``arm`` choose VM types as the SDK does: Coiled's VM type list (``/api/v1/vm-types/``,
  filtered by cores, memory ±10 %, GPUs and architecture) narrowed to the SDK's recommended families; without any of
  them, the SDK's default types of the workspace's cloud. ``vm_types`` together with ``cpu``/``memory`` is refused.
* ``gpu`` on Google Cloud also asks for an NVIDIA T4 accelerator (``options``), as the SDK does.
* An image runs as the job's container (``extra_user_container``); the cluster's own software environment is the one
  the SDK creates for it (``ghcr.io/dask/dask``, named after the image), created before the cluster.
* ``additional_coiled_options`` are ``coiled.batch.run`` keyword arguments and mean what they mean there (spot
  policy, disk size, job timeout, …). Arguments that would reach beyond the job (forwarding pushpool's own AWS
  credentials, the VM's host, uploading local files, raw cluster fields, more tasks) are refused, naming the argument.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from pushpool.errors import BackendError
from pushpool.providers.coiled.api import NAME

DASK_CONTAINER = "ghcr.io/dask/dask"  # the SDK's container for a batch cluster's scheduler when the job has an image
# The SDK's VM types without cpu/memory/vm_type (CloudV2._get_default_instance_types).
DEFAULT_VM_TYPES: Mapping[tuple[str, bool, bool], tuple[str, ...]] = {  # (provider, gpu, arm)
    ("aws", False, False): ("m6i.xlarge", "m5.xlarge"),
    ("aws", True, False): ("g4dn.xlarge",),
    ("aws", False, True): ("m7g.xlarge", "m6g.xlarge"),
    ("aws", True, True): ("g5g.xlarge",),
    ("gcp", False, False): ("e2-standard-4",),
    ("gcp", True, False): ("n1-standard-4",),
    ("gcp", False, True): ("t2a-standard-4",),
    ("gcp", True, True): ("t2a-standard-4",),
    ("azure", False, False): ("Standard_D4_v5",),
}
GCP_SCHEDULER_GPU = {"scheduler_accelerator_type": "nvidia-tesla-t4", "scheduler_accelerator_count": 1}
SPOT_POLICIES = {
    "on-demand": {"spot": False},
    "spot": {"spot": True, "spot_on_demand_fallback": False},
    "spot_with_fallback": {"spot": True, "spot_on_demand_fallback": True},
}
# The coiled.batch.run arguments a job may give in additional_coiled_options. The others are refused: a deployment
# author is untrusted, and forward_aws_credentials (pushpool's own AWS credentials), host setup scripts and SSH
# ingress (the VM's host, outside the job's container), uploads (pushpool's files), cluster_kwargs and name (raw
# cluster fields: the attempt's name and tags) and task arrays reach beyond the one job; `tag` and `secret_env` make
# prefect-coiled's worker fail too (it passes them itself).
OPTIONS = frozenset(
    {"spot_policy", "allow_cross_zone", "disk_size", "job_timeout", "max_retries", "ignore_container_entrypoint",
     "scheduler_vm_type", "env"}
)  # fmt: skip
_AWS_RECOMMENDED = r"m[56789][ig]?\."
_AWS_UNBALANCED = r"(c[56789]|r[6789])[ig]?\."
_AWS_GPU = "g4dn"
_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50,
}  # fmt: skip
_TIME_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1, "secs": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "mins": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "hrs": 3600, "d": 86400, "day": 86400,
    "days": 86400, "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip


def refuse(message: str) -> BackendError:
    return BackendError(message, backend=NAME)


def parse_bytes(text: str | int | float) -> int:
    """dask.utils.parse_bytes: ``'16 GiB'``, ``'2GB'``, ``'1e9'``, ``'500'``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    match = re.fullmatch(r"\s*([\d.eE+-]*)\s*([a-zA-Z]*)\s*", str(text))
    unit = (match.group(2) if match else "").lower() or "b"
    try:
        number = float(match.group(1) or "1") if match else math.nan
    except ValueError:
        number = math.nan
    if unit not in _UNITS or math.isnan(number):
        raise refuse(f"{text!r} is not a valid memory or disk size: give it as a string such as '16 GiB'")
    return int(number * _UNITS[unit])


def parse_seconds(text: Any) -> int:
    """dask.utils.parse_timedelta for ``job_timeout``: ``'30 minutes'``, ``'1h'``, ``3600``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = (match.group(2) if match else "").lower() or "s"
    if not match or unit not in _TIME_UNITS:
        raise refuse(f"job_timeout {text!r} is not a duration such as '30 minutes' or '1 hour'")
    return int(float(match.group(1)) * _TIME_UNITS[unit])


def join_command(parts: list[str]) -> str:
    """coiled.utils.join_command_parts: a part with whitespace in double quotes (the VM's shell expands ``$VAR``)."""
    return " ".join('"' + p.replace('"', r"\"") + '"' if re.search(r"\s", p) else p for p in parts)


def user_command(argv: tuple[str, ...]) -> str:
    """The command as ``_batch_run`` sends it: a ``.py`` first part runs with ``python``, ``\\$`` unescaped."""
    parts = [p.replace(r"\$", "$") for p in argv]
    if parts and parts[0].endswith(".py"):
        parts = ["python", *parts]
    return join_command([p.replace("\\$COILED", "$COILED") for p in parts])


def options_of(extra: Mapping[str, Any]) -> dict[str, Any]:
    """``additional_coiled_options``, checked: only the arguments pushpool gives their SDK meaning."""
    unknown = sorted(set(extra) - OPTIONS)
    if unknown:
        raise refuse(
            f"additional_coiled_options {', '.join(unknown)} not supported by coiled:push pools "
            f"(supported: {', '.join(sorted(OPTIONS))})"
        )
    policy = extra.get("spot_policy")
    if policy is not None and policy not in SPOT_POLICIES:
        raise refuse(f"{policy} is not a valid spot_policy; valid options are: {', '.join(SPOT_POLICIES)}")
    return dict(extra)


def pairs(value: Any, what: str) -> dict[str, str]:
    """A ``KEY=val`` list or a mapping, as coiled.utils.dict_to_key_val_list and back."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and "=" in v for v in value):
        return dict(v.split("=", 1) for v in value)
    raise refuse(f"additional_coiled_options {what} must be a mapping or a list of 'KEY=val'")


def disk_gib(value: Any) -> int | None:
    """coiled.utils.parse_bytes_as_gib: a number is GiB, a size string is rounded up to whole GiB."""
    if value is None:
        return None
    if isinstance(value, str) and value.isnumeric():
        return int(value)
    if isinstance(value, str):
        return math.ceil(parse_bytes(value) / 2**30)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise refuse(f"disk_size {value!r} is not a size in GiB")


def container_senv_name(image: str, arm: bool) -> str:
    """The software environment name the SDK gives a container (``Cluster._start``)."""
    arch = "aarch64" if arm else "x86_64"
    image_and_tag = image.split("/")[-1]
    return re.sub(r"[^A-Za-z0-9-_]", "_", f"{image_and_tag}-{arch}-{uuid.uuid5(uuid.NAMESPACE_DNS, image)}").lower()


def vm_type_query(cpu: int | None, memory: str | None, gpus: int, provider: str, arm: bool) -> dict[str, Any]:
    """The query of ``/api/v1/vm-types/`` the SDK makes (``Cloud._list_instance_types_page``)."""
    if gpus and cpu is None and memory is None:
        cores: Any = [4, 8]  # the SDK's recommended GPU sizes
    else:
        cores = cpu
    params: dict[str, Any] = {}
    if memory:
        size = parse_bytes(memory)
        params["memory__gte"] = round(size * 0.89 * 1e-6)
        params["memory__lte"] = round(size * 1.1 * 1e-6)
    if isinstance(cores, list):
        params["cores__gte"], params["cores__lte"] = min(cores), max(cores)
    elif cores is not None:
        params["cores"] = cores
    if gpus:
        params["gpus"] = gpus
    params["backend_type"] = f"vm_{provider}"
    params["arch"] = "arm64" if arm else "x86_64"
    return params


def preferred(names: list[str], *, provider: str, gpus: int, arm: bool, unbalanced: bool) -> list[str]:
    """The SDK's family filter on the VM types Coiled listed (``_get_preferred_instance_types_from_cpu_memory``)."""
    if provider == "gcp":
        family = "t2a" if arm else ("n1" if gpus else "e2")
        prefixes = (f"{family}-standard",) + (("e2-micro", "e2-small", "e2-medium") if family == "e2" else ())
        prefixes += (f"{family}-highmem", f"{family}-highcpu") if unbalanced else ()
        return [n for n in names if n.startswith(prefixes)]
    if provider == "azure":
        prefixes = ("Standard_D",) + (("Standard_E", "Standard_F") if unbalanced else ())
        return [n for n in names if n.startswith(prefixes)]
    if provider == "aws":
        pattern = _AWS_GPU if gpus else (f"{_AWS_RECOMMENDED}|{_AWS_UNBALANCED}" if unbalanced else _AWS_RECOMMENDED)
        return [n for n in names if re.match(pattern, n)]
    raise refuse(f"unexpected cloud provider {provider!r} of the workspace: cannot choose VM types")
