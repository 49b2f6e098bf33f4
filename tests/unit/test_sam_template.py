"""infra/template.yaml: valid for cfn-lint, bound to the code it deploys, and scoped to resources.

What each function is granted is checked against what its code calls in tests/integration/test_least_privilege.py;
here, that every statement is scoped: a ``Resource: "*"`` only where AWS cannot scope the action (reads, identity,
task definitions) or where a condition narrows it. tests/unit/test_infra_policies.py is the stricter check (account-wide
ARNs, IAM conditions).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
FUNCTIONS = ["SubmitFunction", "MonitorFunction", "ProvisionFunction"]
# Actions AWS does not scope to a resource: read-only listings and descriptions, the caller's identity, task
# definition registration (its ARN does not exist before the call) and the ECR registry token (GetAuthorizationToken).
UNSCOPED = re.compile(
    r"^(ec2:Describe\w+|sts:GetCallerIdentity|ecs:RegisterTaskDefinition|ecs:DescribeTaskDefinition"
    r"|ecr:GetAuthorizationToken)$"
)


def _template() -> dict:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(TEMPLATE))


def _statements(function: dict) -> list[dict]:
    out = []
    for policy in function["Properties"].get("Policies", []):
        for statement in policy["Statement"]:
            branches = statement["Fn::If"][1:] if "Fn::If" in statement else [statement]
            out += [s for s in branches if isinstance(s, dict) and "Effect" in s]
    return out


def test_cfn_lint_is_clean() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_statement_is_scoped_to_resources(name: str) -> None:
    statements = _statements(_template()["Resources"][name])
    assert statements, f"{name} has no policy"
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), (name, actions)
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if "*" in resources and "Condition" not in statement and statement["Effect"] == "Allow":  # a Deny narrows
            assert all(UNSCOPED.match(a) for a in actions), (name, statement.get("Sid"), actions)
        if "iam:PassRole" in actions:
            assert statement["Condition"]["StringEquals"]["iam:PassedToService"] == "ecs-tasks.amazonaws.com"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_points_at_a_handler_that_exists(name: str) -> None:
    properties = _template()["Resources"][name]["Properties"]
    module, _, attribute = properties["Handler"].partition(".")
    path = (TEMPLATE.parent / properties["CodeUri"] / f"{module}.py").resolve()
    spec = importlib.util.spec_from_file_location(f"handler_{name}", path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    assert callable(getattr(loaded, attribute))


def test_the_layer_is_built_by_a_makefile_target_that_exists() -> None:
    layer = _template()["Resources"]["SharedLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert re.search(r"^build-SharedLayer:", (ROOT / "Makefile").read_text(), re.M)


def test_the_monitor_receives_the_task_events_its_handler_acts_on() -> None:
    """The EventBridge rule's detail-type is the one functions/monitor/app.py recognises."""
    from pushpool.entrypoints import aws_lambda

    events = _template()["Resources"]["MonitorFunction"]["Properties"]["Events"]
    assert events["TaskStateChange"]["Properties"]["Pattern"]["detail-type"] == [aws_lambda.ECS_TASK_STATE_CHANGE]


# Settings the code reads that the template deliberately does not pass, each with the reason. A setting added to
# shared/pushpool/settings.py must be passed by the template or named here: the test below fails otherwise.
NOT_PASSED = {
    # Secrets: read from Secrets Manager by the ARNs the template passes, never set in a function's environment.
    "PREFECT_API_KEY": "secret (PUSHPOOL_PREFECT_API_KEY_SECRET_ARN)",
    "PREFECT_API_AUTH_STRING": "secret (PUSHPOOL_PREFECT_API_KEY_SECRET_ARN)",
    "PUSHPOOL_WEBHOOK_TOKEN": "secret (PUSHPOOL_WEBHOOK_TOKEN_SECRET_ARN)",
    "PUSHPOOL_WEBHOOK_TOKEN_PREVIOUS": "secret (rotation through the secret's value)",
    "PUSHPOOL_WEBHOOK_SECRET": "secret (rotation through the secret's value)",
    "PUSHPOOL_WEBHOOK_SECRET_PREVIOUS": "secret (rotation through the secret's value)",
    "webhook_tokens": "derived from the token settings, not an environment variable",
    "webhook_signing_secrets": "derived from the secret settings, not an environment variable",
    # Other platforms and the local CLI / serve.
    "PUSHPOOL_TASKS_QUEUE": "Google Cloud (Cloud Tasks)",
    "PUSHPOOL_TASKS_URL": "Google Cloud (Cloud Tasks)",
    "PUSHPOOL_TASKS_SERVICE_ACCOUNT": "Google Cloud (Cloud Tasks)",
    "PUSHPOOL_CLOUD_RUN_ENDPOINT": "Google Cloud",
    "PUSHPOOL_CLOUD_LOGGING_ENDPOINT": "Google Cloud",
    "PUSHPOOL_CLOUD_TASKS_ENDPOINT": "Google Cloud",
    "PUSHPOOL_IMAGE_PLATFORM_CHECK": "Google Cloud (cloud-run pools)",
    "PUSHPOOL_PROCESS_DIR": "the process backend (pushpool serve)",
    "PUSHPOOL_HOME": "the CLI and pushpool serve",
    "PUSHPOOL_PORT": "pushpool serve",
    "PUSHPOOL_ADMIN_TOKEN": "pushpool serve's /provision and /monitor (the functions are authorized by IAM)",
    "PUSHPOOL_JOB_ENV_PASSTHROUGH": "the process backend (pushpool serve): ECS tasks never inherit the function's env",
    # Tuning whose code default is the deployed value (an operator adds it to the function's environment).
    "PUSHPOOL_JOB_API_URL": "default: PREFECT_API_URL, which tasks reach too",
    "PUSHPOOL_PENDING_TIMEOUT": "monitor policy, code default",
    "PUSHPOOL_START_TIMEOUT": "monitor policy, ECS provider's default",
    "PUSHPOOL_EXIT_GRACE": "monitor policy, code default",
    "PUSHPOOL_CANCEL_GRACE": "monitor policy, code default",
    "PUSHPOOL_DISPATCH_LEAD": "each pool's template default",
    "PUSHPOOL_READ_CACHE_SECONDS": "code default",
    "PUSHPOOL_MAX_RECOVERIES": "monitor policy, code default",
    "PUSHPOOL_TRANSIENT_RETRIES": "submit's bound on transient backend errors, code default",
    "PUSHPOOL_TRANSIENT_RETRY_SECONDS": "submit's bound on transient backend errors, code default",
    "PUSHPOOL_DISPATCH_CONCURRENCY": "code default",
    "PUSHPOOL_POOL_CONCURRENCY": "the monitor's pools dispatched at once, code default",
    "PUSHPOOL_WORKER_NAME": "code default",
}
# Settings only some functions use: passed to those (and checked there) alone.
ONLY_FOR = {
    "PUSHPOOL_SUBMIT_URL": {"ProvisionFunction"},  # what provisioning tells Prefect's automation to call
    "PUSHPOOL_DELAY_QUEUE_URL": {"SubmitFunction", "MonitorFunction"},  # they arm delayed triggers
    "PUSHPOOL_HEARTBEAT_INTERVAL": {"MonitorFunction"},  # the tick's interval
}


def _environment(function: str) -> dict:
    template = _template()
    found = dict(template["Globals"]["Function"]["Environment"]["Variables"])
    found.update(template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {}))
    return found


def _setting_variables() -> dict[str, object]:
    """Environment variable → the code's default, for every setting (shared/pushpool/settings.py, and each
    provider's own settings model, named in the registry)."""
    from pushpool.providers import PROVIDERS, _load
    from pushpool.settings import Settings, _variable

    found = {
        _variable(name): field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
        if name != "provider_environ"  # the providers' variables, listed below
    }
    for provider in PROVIDERS:
        if provider.settings is not None:
            model = _load(provider.settings)
            found.update({field.alias: field.get_default() for field in model.model_fields.values()})
    return found


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_setting_the_code_reads_is_passed_or_excused(name: str) -> None:
    """Each function gets every setting (ONLY_FOR: those that use it), or the setting is in NOT_PASSED with the
    reason; no stale excuse either."""
    passed, variables = _environment(name), _setting_variables()
    wanted = [v for v in variables if v not in NOT_PASSED and name in ONLY_FOR.get(v, {name})]
    missing = sorted(v for v in wanted if v not in passed)
    assert not missing, f"{name}: settings the code reads that the template does not pass: {missing}"
    assert not sorted(v for v in [*NOT_PASSED, *ONLY_FOR] if v not in variables)  # an excuse for a setting now gone


def test_parameters_default_to_the_codes_defaults() -> None:
    """A setting passed from a parameter with a default gets the code's default ("" for none: an empty variable is
    not read)."""
    parameters, defaults = _template()["Parameters"], _setting_variables()
    checked = 0
    for function in FUNCTIONS:
        for variable, value in _environment(function).items():
            if variable not in defaults or not (isinstance(value, dict) and set(value) == {"Ref"}):
                continue
            parameter = parameters.get(value["Ref"], {})
            if "Default" not in parameter:
                continue
            code = defaults[variable]
            assert parameter["Default"] == ("" if code in (None, {}, ()) else str(code)), (variable, value["Ref"])
            checked += 1
    assert checked >= 6  # the managed settings at least


def test_managed_pools_are_served_only_with_a_backend_that_runs_on_lambda() -> None:
    template = _template()
    pool_types = template["Globals"]["Function"]["Environment"]["Variables"]["PUSHPOOL_POOL_TYPES"]["Fn::If"]
    assert pool_types[0] == "ServesManagedPools" and "prefect:managed" in pool_types[1].split(",")
    assert "prefect:managed" not in pool_types[2].split(",")
    rule = template["Rules"]["ManagedPoolsRunOnEcs"]
    assert rule["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "ManagedBackend"}, "ecs"]}
