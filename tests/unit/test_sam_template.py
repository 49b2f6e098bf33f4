"""infra/template.yaml: valid for cfn-lint, and every runtime policy is least-privilege."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"


def _template() -> dict:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(TEMPLATE))


def _statements(function: dict) -> list[dict]:
    out = []
    for policy in function["Properties"].get("Policies", []):
        for statement in policy["Statement"]:
            if "Fn::If" in statement:  # conditional statement: check the branch that is a statement
                out += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
            else:
                out.append(statement)
    return out


def test_cfn_lint_is_clean() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["SubmitFunction", "MonitorFunction", "ProvisionFunction"])
def test_policies_have_no_wildcard_actions_and_scope_pass_role(name: str) -> None:
    function = _template()["Resources"][name]
    statements = _statements(function)
    assert statements, f"{name} has no policy"
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), (name, actions)
        if "iam:PassRole" in actions:
            assert statement["Resource"] != "*"
            assert statement["Condition"]["StringEquals"]["iam:PassedToService"] == "ecs-tasks.amazonaws.com"
        if "ecs:RunTask" in actions or "ecs:StopTask" in actions:
            assert "ecs:cluster" in statement["Condition"]["ArnEquals"]


def test_submit_is_behind_a_function_url_and_monitor_has_its_triggers() -> None:
    resources = _template()["Resources"]
    assert resources["SubmitFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"] == "NONE"
    events = resources["MonitorFunction"]["Properties"]["Events"]
    assert events["Tick"]["Type"] == "ScheduleV2"
    assert events["TaskStateChange"]["Properties"]["Pattern"]["detail-type"] == ["ECS Task State Change"]
    assert resources["SharedLayer"]["Metadata"]["BuildMethod"] == "makefile"
