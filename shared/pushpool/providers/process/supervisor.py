"""Runs one job's command and records how it ended, so a later, separate invocation can read the exit code.

Started detached (its own session) by the process backend as ``python -m pushpool.providers.process.supervisor JOBDIR``.
Reads ``JOBDIR/command.json``, runs the command with the inherited environment, writes ``JOBDIR/child.json`` with
the child's pid, waits, and writes ``JOBDIR/exit.json`` atomically (with ``error``, the reason, when the command could
not start). SIGTERM/SIGINT are forwarded to the child. Standard library only: this is on the path of every job start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def _write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def main(jobdir: str) -> int:
    with open(os.path.join(jobdir, "command.json")) as fh:
        spec = json.load(fh)
    try:
        child = subprocess.Popen(spec["argv"], cwd=spec.get("cwd") or jobdir, stdin=subprocess.DEVNULL)
    except OSError as exc:
        error = f"cannot start {spec['argv'][0]!r}: {exc.strerror or exc}"
        print(f"pushpool: {error}", file=sys.stderr, flush=True)
        _write_json(os.path.join(jobdir, "exit.json"), {"exit_code": 127, "finished_at": time.time(), "error": error})
        return 127
    _write_json(os.path.join(jobdir, "child.json"), {"pid": child.pid})

    def forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    _write_json(os.path.join(jobdir, "exit.json"), {"exit_code": code, "finished_at": time.time()})
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
