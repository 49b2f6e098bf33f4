"""`make demo`'s script, run as a newcomer would: it must finish with every run in its expected final state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_demo_passes(tmp_path: Path, migrated_db: Path) -> None:
    # On a copy of the database the tests' servers start from: the same Prefect release migrated it, once per make test.
    env = {**os.environ, "PUSHPOOL_DEMO_PREFECT_DB": str(migrated_db)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo" / "run_demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DEMO PASSED" in result.stdout
    assert "nothing changed" in result.stdout
    for label, final in (("etl", "COMPLETED"), ("broken", "FAILED"), ("long_job", "CANCELLED")):
        assert f"final {final} (expected {final})" in result.stdout, label
    assert "2 scheduled runs completed (expected 2)" in result.stdout
    # Each run's page shows pushpool's events (issue 26): the query Prefect's UI sends for a flow run's events.
    assert result.stdout.count("3 of 3 expected pushpool events") == 3, result.stdout[-3000:]
