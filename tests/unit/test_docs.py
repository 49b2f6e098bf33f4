"""The README stays what a newcomer reads first (issue 28, item 4): short, and every link in it leads somewhere. The
documentation site itself is built strict by `make docs` (in CI), which checks the links between its pages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_the_readme_is_under_15_kb() -> None:
    assert len(README.read_bytes()) < 15 * 1024


def test_every_relative_link_of_the_readme_exists() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local, "the README links to its documentation"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_documentation_page_is_on_the_site() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {path.name for path in (ROOT / "docs").glob("*.md")}
    listed = set(re.findall(r"([\w-]+\.md)", nav))
    assert pages <= listed, pages - listed
