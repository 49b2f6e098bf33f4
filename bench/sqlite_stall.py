"""Does a Prefect server on SQLite stall under polling? Standalone (not in ``make bench``); docs/development.md.

Starts a fresh server (SQLite) with the given interpreter's Prefect, makes ``--pools`` process pools with a deployment
and three runs each, then polls every pool with ``get_scheduled_flow_runs`` (each pool every 0-0.5 s, one thread per
pool, or one poll at a time with ``--serial``) for ``--seconds``. Prints how many polls took longer than 5 s and the
server's ``database is locked`` lines. On a server that stalls, setting up the pools meets the stalls too: allow
several minutes. Measured 2026-12-06 with prefect 3.8.8: on SQLAlchemy 2.0.58 a stall of about
60 s (SQLite's busy timeout) in every run, on 2.1.9 none.

    .venv/bin/python bench/sqlite_stall.py --python .venv-server/bin/python
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared"))

from pushpool import localserver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=None, help="the interpreter whose Prefect runs the server (default: this)")
    parser.add_argument("--pools", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--serial", action="store_true", help="one poll at a time")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a `timeout` still stops the server (the finally below)
    home = Path(tempfile.mkdtemp(prefix="pushpool-sqlite-stall-"))
    server = localserver.start(home, python=args.python)
    api = server.api_url
    slow: list[float] = []
    stop = threading.Event()
    one_at_a_time = threading.Lock() if args.serial else None

    def call(method: str, path: str, **kwargs) -> httpx.Response:
        while True:  # SQLite's "database is locked" is a 503: retry
            response = httpx.request(method, api + path, timeout=120, **kwargs)
            if response.status_code != 503:
                response.raise_for_status()
                return response
            time.sleep(0.1)

    def poll(pool: str) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                if one_at_a_time is None:
                    httpx.post(f"{api}/work_pools/{pool}/get_scheduled_flow_runs", json={}, timeout=120)
                else:
                    with one_at_a_time:
                        httpx.post(f"{api}/work_pools/{pool}/get_scheduled_flow_runs", json={}, timeout=120)
            except httpx.HTTPError:
                pass  # the server stopping at the end
            took = time.monotonic() - started
            if took > 5 and not stop.is_set():
                slow.append(took)
            time.sleep(random.random() * 0.5)

    try:
        flow = call("POST", "/flows/", json={"name": "stall"}).json()["id"]
        for i in range(args.pools):
            pool = f"stall-{i}"
            call("POST", "/work_pools/", json={"name": pool, "type": "process"})
            body = {"name": pool, "flow_id": flow, "work_pool_name": pool}
            deployment = call("POST", "/deployments/", json=body).json()["id"]
            for _ in range(3):
                call("POST", f"/deployments/{deployment}/create_flow_run", json={})
            threading.Thread(target=poll, args=(pool,), daemon=True).start()
            time.sleep(0.3)
        time.sleep(args.seconds)
    finally:
        stop.set()
        server.stop()
    locked = [line for line in (home / "server.log").read_text().splitlines() if "database is locked" in line]
    longest = max(slow, default=0.0)
    print(f"polls over 5 s: {len(slow)} (longest {longest:.1f} s); 'database is locked' lines: {len(locked)}")


if __name__ == "__main__":
    main()
