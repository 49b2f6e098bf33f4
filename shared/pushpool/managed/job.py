"""The managed pool's job: its base job template (what users may set), the refusal of bad job variables, and the
bootstrap that installs ``pip_packages`` before ``prefect flow-run execute``.

Users of a managed pool get exactly two job variables, as on Prefect Cloud: ``pip_packages`` (a list of requirement
strings) and ``env``. The image, memory, run time and backend are the operator's. Anything else is refused before a
job exists (:class:`~pushpool.errors.JobRefusedError`, the run is crashed with the reason): an ``image``, a
``pip_packages`` that is not a list of requirement strings, a requirement with shell metacharacters or starting with
``-`` (a pip option), a deployment without a pull step that fetches its code.

The bootstrap is a few lines of Python run with the image's (or, for the process backend, pushpool's) interpreter,
standard library only: ``pip install --target <job dir>/.pushpool-packages <requirements>`` (argv, never a shell;
packages of one run never reach another run or the interpreter's own site-packages), then ``exec prefect flow-run
execute`` with that directory on ``PYTHONPATH``. When pip fails, its output is the job's output and the job exits 3:
the monitor crashes the run with the last lines (pip's error) — once, no retry loop.

Example:
    >>> managed_job({"pip_packages": ["pandas>=2,<3"], "env": {"A": "1"}}, [{"x.git_clone": {}}]).pip_packages
    ('pandas>=2,<3',)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pushpool.errors import JobRefusedError

PIP_PACKAGES_ENV = "PUSHPOOL_PIP_PACKAGES"
PACKAGES_DIR = ".pushpool-packages"
PIP_FAILED_EXIT_CODE = 3
USER_VARIABLES = ("pip_packages", "env")
# Characters a shell gives a meaning to that no requirement string needs (specifiers' < > ! * are allowed: pip gets
# an argv, never a command line). Environment markers (`; python_version < "3.12"`) are refused with them.
SHELL_METACHARACTERS = frozenset(";&|`$(){}\\'\"#\n\r\t")
MAX_REQUIREMENT = 256
# Pull steps that bring the deployment's code from a remote location (git, or block-based storage).
_CODE_STEPS = ("git_clone", "pull_with_block", "pull_from_remote_storage")

BOOTSTRAP = f"""\
import json, os, subprocess, sys
packages = json.loads(os.environ.get({PIP_PACKAGES_ENV!r}) or "[]")
if packages:
    target = os.path.join(os.getcwd(), {PACKAGES_DIR!r})
    print("pushpool: installing pip_packages: " + " ".join(packages), flush=True)
    code = subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                            "--target", target, *packages])
    if code:
        print("pushpool: installing pip_packages failed (pip exit code %d); the flow was not started" % code,
              file=sys.stderr, flush=True)
        sys.exit({PIP_FAILED_EXIT_CODE})
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (target, os.environ.get("PYTHONPATH")) if p)
os.execvp("prefect", ["prefect", "flow-run", "execute"])
"""


@dataclass(frozen=True)
class ManagedJob:
    """What a user asked for, validated: the requirements to install and the job's environment."""

    pip_packages: tuple[str, ...] = ()
    env: Mapping[str, str | None] = field(default_factory=dict)

    def job_env(self) -> dict[str, str | None]:
        """The user's ``env`` plus the bootstrap's input (which the user cannot override)."""
        return {**self.env, PIP_PACKAGES_ENV: json.dumps(list(self.pip_packages))}


def base_job_template() -> dict[str, Any]:
    """The template of ``prefect:managed`` pools: the two variables users get (Prefect Cloud's managed pools' own)."""
    return {
        "job_configuration": {"pip_packages": "{{ pip_packages }}", "env": "{{ env }}"},
        "variables": {
            "type": "object",
            "properties": {
                "pip_packages": {
                    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                    "default": None,
                    "title": "Pip Packages",
                    "description": "Python packages installed (pip requirement strings) before the flow run starts.",
                },
                "env": {
                    "type": "object",
                    "title": "Environment Variables",
                    "description": "Environment variables to set when starting a flow run.",
                    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
            },
        },
    }


def managed_job(values: Mapping[str, Any], pull_steps: Sequence[Any] | None) -> ManagedJob:
    """Validate a managed run's merged job variables and its deployment's pull steps.

    Raises:
        JobRefusedError: what is wrong, in words a user can act on (nothing has been started).
    """
    if values.get("image") is not None:
        raise JobRefusedError(
            "managed pools run the operator's image: the 'image' job variable is not allowed (install what the flow "
            "needs with pip_packages, or use a push pool for an image of your own)"
        )
    unknown = sorted(k for k, v in values.items() if k not in USER_VARIABLES and v is not None)
    if unknown:
        raise JobRefusedError(
            f"job variable(s) {', '.join(map(repr, unknown))} are not available on managed pools "
            f"(only {' and '.join(USER_VARIABLES)})"
        )
    _check_pull_steps(pull_steps)
    return ManagedJob(pip_packages=_requirements(values.get("pip_packages")), env=_env(values.get("env")))


def _requirements(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise JobRefusedError(f"pip_packages must be a list of requirement strings, got {type(value).__name__}")
    found = []
    for item in value:
        if not isinstance(item, str):
            raise JobRefusedError(
                f"pip_packages must be a list of requirement strings; an entry is a {type(item).__name__}"
            )
        requirement = item.strip()
        bad = sorted({c for c in requirement if c in SHELL_METACHARACTERS})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise JobRefusedError(f"pip_packages entry {requirement[:80]!r} contains shell metacharacters ({shown})")
        if not requirement or not requirement[0].isalnum():
            raise JobRefusedError(
                f"pip_packages entry {requirement[:80]!r} is not a requirement (it must start with a package name; "
                "pip options are not allowed)"
            )
        if len(requirement) > MAX_REQUIREMENT:
            raise JobRefusedError(f"pip_packages entry is longer than {MAX_REQUIREMENT} characters")
        found.append(requirement)
    return tuple(found)


def _env(value: Any) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise JobRefusedError(f"env must be an object of environment variables, got {type(value).__name__}")
    return {str(k): (v if v is None or isinstance(v, str) else json.dumps(v)) for k, v in value.items()}


def _check_pull_steps(pull_steps: Sequence[Any] | None) -> None:
    names = [str(next(iter(step))) for step in pull_steps or () if isinstance(step, Mapping) and step]
    if not any(n.rsplit(".", 1)[-1] in _CODE_STEPS or n.rsplit(".", 1)[-1].startswith("pull_from_") for n in names):
        found = f" (it has: {', '.join(names)})" if names else ""
        raise JobRefusedError(
            "managed runs take their code from the deployment's pull steps — a git repository (flow.from_source with "
            f"a git URL) or block-based storage — and this deployment has no such pull step{found}"
        )
