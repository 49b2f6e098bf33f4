"""Runs one job's command and records how it ended, so a later, separate invocation can read the exit code.

Started detached (its own session) by the process backend as ``python -m pushpool.providers.process.supervisor JOBDIR``.
Reads ``JOBDIR/command.json``, runs the command with the inherited environment, writes ``JOBDIR/child.json`` with
the child's pid, waits, and writes ``JOBDIR/exit.json`` atomically (with ``error``, the reason, when the command could
not start or was killed for its memory). SIGTERM/SIGINT are forwarded to the child. Standard library only: this is on
the path of every job start.

A command that ends abnormally (a non-zero code, a signal: ``kill -9`` of ``prefect flow-run execute``) takes the rest
of its job with it: Prefect's engine runs in a session of its own and would otherwise go on, orphaned, running the
flow of a job that reads as ended. Every other process carrying the job's marker (``PUSHPOOL_JOB_ID``) is killed before
``exit.json`` is written, and the error says so. (A supervisor killed itself is seen by the backend's ``status``.)

``memory_limit_mb`` (managed runs: the tier's memory) is enforced on the command and every process it starts (pip,
Prefect's engine, the flow's subprocesses): a watcher sums their resident memory (``/proc``) every 100 ms and kills
them all with SIGKILL when the sum goes over the limit, recording ``exceeded its memory limit`` as the error. (An
address-space rlimit would not do: Python turns it into a MemoryError the flow may catch, and Prefect would report the
run Failed, not Crashed; it also counts reserved, unused address space.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

WATCH_INTERVAL = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
    over: list[str] = []
    limit = spec.get("memory_limit_mb")
    if limit:
        threading.Thread(target=_watch_memory, args=(child, int(limit), over), daemon=True).start()
    code = child.wait()
    ended: dict = {"exit_code": code, "finished_at": time.time()}
    if over:
        ended["error"] = over[0]
    elif code != 0:
        stopped = stop_job_processes(os.environ.get(MARKER, ""))
        if stopped:
            how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
            ended["error"] = (
                f"command {how}; {stopped} remaining process{'es' if stopped > 1 else ''} of the job "
                "(Prefect's engine) stopped"
            )
            print(f"pushpool: the job's {ended['error']}", file=sys.stderr, flush=True)
    _write_json(os.path.join(jobdir, "exit.json"), ended)
    return 0 if code == 0 else 1


MARKER = "PUSHPOOL_JOB_ID"  # the same name as the backend's (not imported: standard library only here)


def job_processes() -> dict[str, list[int]]:
    """Live processes (but this one) whose environment carries ``PUSHPOOL_JOB_ID``, by its value; read from ``/proc``
    (empty where there is none). Only each environment's bytes are searched: a zombie's reads empty, another user's
    is refused."""
    if not os.path.isdir("/proc"):
        return {}
    marked, me, found = f"\0{MARKER}=".encode(), os.getpid(), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = b"\0" + fh.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        start = environ.find(marked)
        if start < 0:
            continue
        start += len(marked)
        end = environ.find(b"\0", start)
        key = environ[start : end if end >= 0 else len(environ)].decode(errors="replace")
        if key:
            found.setdefault(key, []).append(int(entry))
    return found


def stop_job_processes(key: str) -> int:
    """SIGKILL every live process (but this one) whose environment carries ``PUSHPOOL_JOB_ID=<key>``; their number."""
    killed = 0
    for pid in job_processes().get(key, []) if key else []:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except OSError:  # gone meanwhile
            continue
    return killed


def _signal_name(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (parent pid → child pids)."""
    found: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        found.setdefault(ppid, []).append(int(entry))
    return found


def _tree(root: int) -> list[int]:
    children, pids, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, ()))
    return pids


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _watch_memory(child: subprocess.Popen, limit_mb: int, over: list[str]) -> None:
    """Kill the command's whole process tree when together it is resident in more than ``limit_mb`` MiB."""
    if not os.path.isdir("/proc"):
        print("pushpool: no /proc on this machine: the memory limit is not enforced", file=sys.stderr, flush=True)
        return
    while child.poll() is None:
        pids = _tree(child.pid)
        used = sum(_resident_bytes(pid) for pid in pids)
        if used > limit_mb * 1024 * 1024:
            over.append(f"exceeded its memory limit of {limit_mb} MiB ({used // (1024 * 1024)} MiB in use); killed")
            print(f"pushpool: the job {over[0]}", file=sys.stderr, flush=True)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return
        time.sleep(WATCH_INTERVAL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
