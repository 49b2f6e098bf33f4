"""``python -m tests.migrated_db PATH``: a Prefect database as a fresh server leaves it (every migration run, nothing
of any test's in it), written to ``PATH``, for the tests' servers to start from (``PUSHPOOL_TEST_MIGRATED_DB``).

``make test`` makes it once per ``.venv-server`` (it is remade when that environment is): a fresh database costs a
server about 12 s of CPU for its migrations, a copy of this one about 4 s to start, and each pytest-xdist worker starts
one at the same moment as the others (tests/conftest.py ``session_server``)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pushpool import localserver

from tests.helpers import server_python, snapshot_database


def make(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="pushpool-migrate-") as tmp:
        server = localserver.start(Path(tmp) / "home", python=server_python())
        try:
            snapshot_database(server.home, partial)
        finally:
            server.stop()
    os.replace(partial, target)  # whole or not at all: an interrupted make leaves no half file behind


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.migrated_db PATH")
    make(Path(sys.argv[1]))
