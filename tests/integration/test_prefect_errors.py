"""What a real Prefect server refuses reaches the user as the field it refused and why (issue 25, item 2)."""

from __future__ import annotations

import pytest
from pushpool.errors import OrchestratorError
from pushpool.prefect_api.client import PrefectClient

pytestmark = pytest.mark.integration


def test_a_real_server_s_422_is_shown_with_its_field(prefect_api: str) -> None:
    with PrefectClient(prefect_api) as client, pytest.raises(OrchestratorError) as refused:
        client._json(
            "POST",
            "/automations/",
            json={
                "name": "pushpool-422-probe",
                "trigger": {"type": "event", "expect": ["x"], "posture": "Reactive", "threshold": 1, "within": 0},
                "actions": [{"type": "do-nothing"}],
                "not_a_field": "s3cr3t-value",
            },
        )
    assert refused.value.status_code == 422
    assert "not_a_field: Extra inputs are not permitted" in refused.value.one_line()
    assert "s3cr3t-value" not in refused.value.one_line()
