"""ARM template expressions pushpool evaluates without a deployment (providers/aci/arm_expressions.py), and the ones it
refuses by name (they need ARM itself)."""

from __future__ import annotations

import pytest
from pushpool.providers.aci.arm_expressions import ArmExpressionError, evaluate

CONTEXT = {
    "parameters": {"location": "[resourceGroup().location]", "prefix": "job"},
    "variables": {"os": "[concat('Lin', 'ux')]"},
    "subscription_id": "00000000-0000-0000-0000-0000000000a1",
    "resource_group": "rg-x",
    "location": "westeurope",
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("[concat('rg-', resourceGroup().name, '-', toUpper(parameters('location')))]", "rg-rg-x-WESTEUROPE"),
        ("[format('{0}/{1}', subscription().subscriptionId, 'it''s')]", "00000000-0000-0000-0000-0000000000a1/it's"),
        ("[variables('os')]", "Linux"),
        ("[add(1, mul(2, 3))]", 7),
        ("[if(equals(parameters('prefix'), 'job'), 'yes', 'no')]", "yes"),
        ("[resourceGroup()['location']]", "westeurope"),
        ("[concat(createArray('a'), createArray('b'))]", ["a", "b"]),
        ("[[not an expression]", "[not an expression]"),
        ("plain", "plain"),
        (
            "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'id1')]",
            "/subscriptions/00000000-0000-0000-0000-0000000000a1/resourceGroups/rg-x/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/id1",
        ),
    ],
)
def test_an_expression_is_evaluated_as_arm_documents_it(expression: str, expected: object) -> None:
    assert evaluate({"v": [expression]}, CONTEXT) == {"v": [expected]}


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("[uniqueString(resourceGroup().id)]", "uniqueString()"),
        ("[guid('x')]", "guid()"),
        ("[utcNow()]", "utcNow()"),
        ("[listKeys('x', '2020-01-01')]", "listKeys()"),
        ("[noSuchFunction(1)]", "noSuchFunction()"),
        ("[parameters('undeclared')]", "'undeclared'"),
        ("[concat('a']", "ends too early"),
    ],
)
def test_what_needs_arm_or_is_malformed_is_refused_by_name(expression: str, named: str) -> None:
    with pytest.raises(ArmExpressionError) as caught:
        evaluate(expression, CONTEXT)
    assert named in str(caught.value)
