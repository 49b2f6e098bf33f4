"""The install line the README gives users brings the same Prefect the tests run against (issue 28, item 1)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_server_extra_pins_what_the_tests_run_prefect_with() -> None:
    extras = _extras()
    # Prefect 3.8.8 breaks on FastAPI 0.151+ (the server does not start) and SQLAlchemy 2.1 (no scheduled runs).
    assert set(extras["server"]) == {"prefect==3.8.8", "fastapi<0.151", "sqlalchemy>=2.0,<2.1"}
    assert set(extras["server"]) <= set(extras["dev"])


def test_the_readme_s_quick_start_installs_the_server_extra() -> None:
    readme = (ROOT / "README.md").read_text()
    first = next(line for line in readme.splitlines() if re.match(r"^pip install -e '\.\[", line))
    assert "server" in re.search(r"\[(.*?)\]", first).group(1).split(","), first
