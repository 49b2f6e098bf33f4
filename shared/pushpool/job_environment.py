"""What of pushpool's own environment a job may see: an allowlist, never "everything minus a denylist".

pushpool runs where the operator's credentials are (cloud keys, ``PREFECT_API_KEY``, database URLs, its own webhook
token), and a job runs a deployment author's code, who is not trusted (design.md rule 8). So nothing of pushpool's
environment reaches a job unless it is named here: what ``prefect flow-run execute`` needs to start on this machine
(the executable search path, the home and temporary directories, locale and time zone, the Python environment, CA
bundles) and the names the operator lists in ``PUSHPOOL_JOB_ENV_PASSTHROUGH``. What pushpool gives every job
(``PREFECT_API_URL``, ``PREFECT__FLOW_RUN_ID``, the Prefect credential) and the job's own ``env`` come on top, from the
job's spec.

Two places read it: the ``process`` backend (the environment its jobs start with) and template rendering
(``{{ $NAME }}`` placeholders, for every backend: in a pool's template, and in a deployment's ``env`` job variable
when the pool's template gives ``env`` defaults — Prefect merges it into them before rendering).

Example:
    >>> job_environ(environ={"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "s", "LC_ALL": "C", "PIP_INDEX_URL": "u"})
    {'PATH': '/bin', 'LC_ALL': 'C'}
    >>> job_environ(("PIP_INDEX_URL",), environ={"PATH": "/bin", "PIP_INDEX_URL": "u"})
    {'PATH': '/bin', 'PIP_INDEX_URL': 'u'}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

# What a flow-run process needs to start and behave like one started by hand on this machine. None of these carries
# a credential.
ALLOWED = frozenset(
    {
        # the process and its user
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        # the Python environment that runs `prefect flow-run execute`
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "LD_LIBRARY_PATH",
        # CA bundles (to reach the Prefect API and package indexes behind a private CA)
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "PREFECT_API_SSL_CERT_FILE",
        "PREFECT_API_TLS_INSECURE_SKIP_VERIFY",
        # where Prefect keeps its local state (profiles, local result storage)
        "PREFECT_HOME",
    }
)
ALLOWED_PREFIXES = ("LC_",)  # locale categories
PASSTHROUGH_VARIABLE = "PUSHPOOL_JOB_ENV_PASSTHROUGH"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def check_passthrough(names: Iterable[str]) -> tuple[str, ...]:
    """The operator's extra names, validated: variable names, none of pushpool's own (``PUSHPOOL_*``: its secrets).

    Raises:
        ValueError: a name that is not a variable name, or one of pushpool's own.
    """
    out: list[str] = []
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"names {name!r}, which is not an environment variable name")
        if name.upper().startswith("PUSHPOOL_"):
            raise ValueError(f"names pushpool's own {name}, which never reaches a job")
        out.append(name)
    return tuple(dict.fromkeys(out))


def job_environ(passthrough: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of ``environ`` (pushpool's process environment by default) a job may see."""
    env = os.environ if environ is None else environ
    extra = set(passthrough)
    return {k: v for k, v in env.items() if k in ALLOWED or k.startswith(ALLOWED_PREFIXES) or k in extra}
