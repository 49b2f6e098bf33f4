"""infra/template.yaml: valid for cfn-lint, bound to the code it deploys, and scoped to resources.

What each function is granted is checked against what its code calls in tests/integration/test_least_privilege.py;
here, that every statement is scoped: a ``Resource: "*"`` only where AWS cannot scope the action (reads, identity,
task definitions) or where a condition narrows it.
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
# Actions AWS does not scope to a resource: read-only listings and descriptions, the caller's identity, and task
# definition registration (its ARN does not exist before the call).
UNSCOPED = re.compile(
    r"^(ec2:Describe\w+|sts:GetCallerIdentity|ecs:RegisterTaskDefinition|ecs:DescribeTaskDefinition)$"
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
        if "*" in resources and "Condition" not in statement:
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
