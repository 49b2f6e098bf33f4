"""The `pushpool` command against real servers: clear errors at start, Basic auth, status, work-pool create; its help,
exit codes and the message without the cli extra; the [y/n] question, the progress and the status table on a terminal
(a pseudo-terminal) and as plain text when stdout is not one."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import boto3
import pytest
from pushpool import localserver

from tests.helpers import PrefectHelper, start_server

pytestmark = pytest.mark.integration


def pushpool(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pushpool.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PUSHPOOL_"))}
    env.update({"PUSHPOOL_HOME": str(tmp_path / "pp"), **extra})
    return env


def test_missing_url_is_a_clear_error_at_start(tmp_path: Path) -> None:
    result = pushpool("serve", env=base_env(tmp_path))
    assert result.returncode == 2
    assert "PREFECT_API_URL is not set" in result.stderr


def test_unreachable_server_is_a_clear_error_at_start(tmp_path: Path) -> None:
    port = localserver.free_port()
    env = base_env(tmp_path, PREFECT_API_URL=f"http://127.0.0.1:{port}/api")
    result = pushpool("status", env=env)
    assert result.returncode == 2
    assert "cannot use the Prefect API" in result.stderr and "unavailable" in result.stderr


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path):
    server = start_server(
        tmp_path_factory.mktemp("auth-server"),
        migrated_db,
        extra_env={"PREFECT_SERVER_API_AUTH_STRING": "admin:correct-horse"},
    )
    yield server.api_url
    server.stop()


def test_wrong_credentials_are_a_clear_error_and_are_not_printed(tmp_path: Path, auth_server: str) -> None:
    env = base_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING="admin:wrong-password")
    result = pushpool("status", env=env)
    assert result.returncode == 2
    assert "refused the credentials" in result.stderr
    assert "wrong-password" not in result.stderr + result.stdout


def test_basic_auth_works_end_to_end(tmp_path: Path, auth_server: str) -> None:
    env = base_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING="admin:correct-horse")
    created = pushpool("work-pool", "create", "authpool", "--type", "process:push", env=env)
    assert created.returncode == 0, created.stderr
    assert "created" in created.stdout
    again = pushpool("work-pool", "create", "authpool", "--type", "process:push", env=env)
    assert "nothing changed" in again.stdout
    assert "correct-horse" not in created.stdout + created.stderr + again.stdout + again.stderr
    status = pushpool("status", env=env)
    assert status.returncode == 0 and "no runs in flight" in status.stdout


def test_bad_pool_input_is_refused(tmp_path: Path, auth_server: str) -> None:
    env = base_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING="admin:correct-horse")
    for args, fragment in (
        (("work-pool", "create", "x", "--type", "nomad:push"), "unknown push pool type"),
        (("work-pool", "create", "x", "--type", "process"), "not a push pool type"),
        (("work-pool", "create", "prefect-x", "--type", "process:push"), "reserved"),
        (("work-pool", "create", "bad name!", "--type", "process:push"), "invalid work pool name"),
    ):
        result = pushpool(*args, env=env)
        assert result.returncode == 2 and fragment in result.stderr, result.stderr


# --- the command line itself: help, the missing extra, exit codes, the [y/n] question, progress, status ------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]")


def in_terminal(args: list[str], env: dict[str, str], answer: str | None = None) -> tuple[int, str]:
    """Run ``pushpool`` with stdin, stdout and stderr on a pseudo-terminal (200 columns), answering the [y/n] question
    with ``answer``; the output without its terminal escape sequences."""
    cmd = [sys.executable, "-m", "pushpool.entrypoints.cli", *args]
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    # A terminal's shell exports its size too; a COLUMNS inherited from the test process (a pytest-xdist worker has no
    # terminal) would otherwise win over the pty's 200 columns in rich and squeeze the table.
    env = {**env, "COLUMNS": "200", "LINES": "50"}
    proc = subprocess.Popen(cmd, env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output, answered = b"", False
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if answer is not None and not answered and "[y/n]" in ANSI.sub("", output.decode(errors="replace")):
            os.write(controller, answer.encode() + b"\n")
            answered = True
    proc.wait(timeout=120)
    os.close(controller)
    return proc.returncode, ANSI.sub("", output.decode(errors="replace")).replace("\r\n", "\n")


def cloud_env(prefect_api: str, tmp_path: Path) -> dict[str, str]:
    """The test's environment (moto's endpoint and dummy credentials included) pointed at the session's server."""
    return {**os.environ, "PREFECT_API_URL": prefect_api, "PUSHPOOL_HOME": str(tmp_path / "pp")}


def cluster_exists(pool: str) -> bool:
    clusters = boto3.client("ecs", region_name="us-east-1").describe_clusters(clusters=[f"pushpool-{pool}"])
    return any(c["status"] == "ACTIVE" for c in clusters["clusters"])


def plan_lines(out: str) -> list[str]:
    """The steps of the plan as printed (boxed table or panel), without their details: ``create ECS cluster …`` …"""
    steps = re.findall(r"^[|│]\s+- (.+?)\s*[|│]$", out, re.M)
    return [re.sub(r" \(.*\)$", "", step) for step in steps]


def step_lines(out: str) -> list[tuple[int, int, str]]:
    """The progress lines, ``[1/6] Provisioning IAM role pushpool-…`` … (on a terminal, after a redrawn bar and \\r)."""
    lines = re.findall(r"^\[(\d+)/(\d+)\] (.+)$", out.replace("\r", "\n"), re.M)
    return [(int(i), int(n), rest) for i, n, rest in lines]


def test_help_lists_every_command_and_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The top-level help from the installed command; every command's own help from ``cli.main``, the function that
    command runs, in this process (the same help, a tenth of the CPU)."""
    from pushpool.entrypoints import cli

    env = base_env(tmp_path)
    root = pushpool("--help", env=env)
    assert root.returncode == 0, root.stderr
    for command in ("serve", "work-pool", "status", "monitor", "logs", "--verbose", "--version"):
        assert command in root.stdout, command
    assert re.search(r"(?<!-)-v\b", root.stdout) and re.search(r"(?<!-)-h\b", root.stdout)

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PUSHPOOL_HOME", str(tmp_path / "pp"))

    def shown(*args: str) -> str:
        assert cli.main(list(args)) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    pools = shown("work-pool", "-h")
    for command in ("create", "provision-infra", "deprovision", "delete", "ls", "inspect"):
        assert command in pools, command
    # -o/--output everywhere a result is printed (Prefect's convention); --json, kept for scripts, is not shown.
    options = {
        ("serve",): ("--host", "--port", "--monitor-interval", "--no-event-stream"),
        ("work-pool", "create"): (
            *("--type", "--concurrency-limit", "--submit-url", "--port", "--dry-run", "--output", "--provision-infra"),
            *("--yes", "--region", "--credentials", "role|access-key"),
        ),
        ("work-pool", "provision-infra"): ("--submit-url", "--port", "--output", "--yes", "--region", "--credentials"),
        ("work-pool", "deprovision"): ("--type", "--output", "--yes", "--region"),
        ("work-pool", "delete"): ("--type", "--keep-infra", "--dry-run", "--yes", "--region", "--output"),
        ("work-pool", "ls"): ("--output",),
        ("work-pool", "inspect"): ("--output",),
        ("logs",): ("--lines", "--output"),
        ("status",): ("--pool", "--output"),
    }
    for command, names in options.items():
        text = shown(*command, "--help")
        for name in names:
            assert name in text, (command, name)
        if "--yes" in names:
            assert re.search(r"(?<!-)-y\b", text), command
        if "--output" in names:
            assert re.search(r"(?<!-)-o\b", text) and "--json" not in text, command


def test_main_returns_the_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from pushpool.entrypoints import cli

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PUSHPOOL_HOME", str(tmp_path / "pp"))
    assert cli.main(["--help"]) == 0
    assert "work-pool" in capsys.readouterr().out
    assert cli.main(["work-pool", "create", "x"]) == 2  # --type is required: a usage error
    assert "--type" in capsys.readouterr().err
    assert cli.main(["work-pool", "create", "x", "--type", "ecs:push", "--credentials", "password"]) == 2
    assert cli.main(["no-such-command"]) == 2
    assert cli.main([]) == 2  # no command: a usage error, as with argparse
    assert cli.main(["-v", "status"]) == 2
    err = capsys.readouterr().err
    assert "pushpool: error: PREFECT_API_URL is not set" in err and "Traceback" not in err


@pytest.mark.parametrize("package", ["typer", "rich"])
def test_without_the_cli_extra_the_command_says_how_to_install_it(tmp_path: Path, package: str) -> None:
    code = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == {package!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
        return None
sys.meta_path.insert(0, NotInstalled())
sys.argv = ["pushpool", "status"]
from pushpool.entrypoints.cli import main
sys.exit(main())
"""
    result = subprocess.run([sys.executable, "-c", code], env=base_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pushpool: error:") and "pip install 'pushpool[cli]'" in lines[0]
    assert package in lines[0]


def test_the_question_answered_no_changes_nothing_and_yes_applies(
    prefect_api: str, prefect: PrefectHelper, tmp_path: Path, moto_endpoint: str
) -> None:
    env = cloud_env(prefect_api, tmp_path)
    pool = prefect.unique("ask")
    create = ["work-pool", "create", pool, "--type", "ecs:push", "--provision-infra"]

    code, out = in_terminal(create, env, answer="n")
    assert code == 1, out
    assert f"Provisioning infrastructure for work pool {pool}:" in out
    assert f"create ECS cluster pushpool-{pool}" in plan_lines(out)  # the plan, in its panel
    assert out.index("create ECS cluster") < out.index("Proceed with infrastructure provisioning? [y/n]")
    assert "cancelled: nothing was changed" in out and "[1/" not in out
    assert prefect.request("GET", f"/work_pools/{pool}").status_code == 404
    assert not cluster_exists(pool)

    code, out = in_terminal(create, env, answer="yes")
    assert code == 0 and "Infrastructure successfully provisioned!" in out, out
    assert prefect.request("GET", f"/work_pools/{pool}").status_code == 200
    assert cluster_exists(pool)

    code, out = in_terminal(["work-pool", "deprovision", pool], env, answer="n")
    assert code == 1 and "Remove these resources? [y/n]" in out and "cancelled: nothing was changed" in out, out
    assert f"delete ECS cluster pushpool-{pool}" in plan_lines(out)
    assert cluster_exists(pool)

    code, out = in_terminal(["work-pool", "deprovision", pool], env, answer="y")
    assert code == 0 and "Removed." in out, out
    assert not cluster_exists(pool)


def test_progress_shows_each_step_in_order(
    prefect_api: str, prefect: PrefectHelper, tmp_path: Path, moto_endpoint: str
) -> None:
    env = cloud_env(prefect_api, tmp_path)
    pool = prefect.unique("steps")
    # Not a terminal: the boxed plan, then one plain line per step, in the plan's order, then 100%.
    piped = pushpool("work-pool", "create", pool, "--type", "ecs:push", "--provision-infra", env=env, timeout=120)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    plan = plan_lines(piped.stdout)
    steps = step_lines(piped.stdout)
    assert len(plan) >= 5 and [(i, n) for i, n, _ in steps] == [(i, len(plan)) for i in range(1, len(plan) + 1)]
    verbs = {"create ": "Provisioning ", "update ": "Updating ", "already exists: ": "Already exists: "}
    for planned, (_, _, done) in zip(plan, steps, strict=True):
        action = next(action for action in verbs if planned.startswith(action))
        assert done == verbs[action] + planned.removeprefix(action), (planned, done)
    out = piped.stdout
    assert out.index(f"[{len(plan)}/{len(plan)}]") < out.index("100%") < out.index("Infrastructure successfully")

    # A terminal: the same lines above a progress bar that ends complete.
    code, out = in_terminal(["work-pool", "deprovision", pool, "--yes"], env)
    assert code == 0 and "Removed." in out, out
    plan = plan_lines(out)
    steps = step_lines(out)
    assert [i for i, _, _ in steps] == list(range(1, len(plan) + 1)) and all(n == len(plan) for _, n, _ in steps)
    assert all(done.startswith("Removing") for _, _, done in steps)
    assert [done.removeprefix("Removing ") for _, _, done in steps] == [p.removeprefix("delete ") for p in plan]
    bar = [int(done) for done in re.findall(rf"━ (\d+)/{len(plan)} ", out)]  # the bar, each time it is drawn
    assert bar == sorted(bar) and set(bar) == set(range(len(plan) + 1)), out  # moves step by step to complete


def test_status_is_a_table_on_a_terminal_and_columns_otherwise(
    prefect_api: str, prefect: PrefectHelper, pool: str, tmp_path: Path
) -> None:
    run_id = prefect.create_run(prefect.create_deployment(pool))
    prefect.set_state(run_id, "RUNNING", force=True)
    env = cloud_env(prefect_api, tmp_path)
    piped = pushpool("status", "--pool", pool, env=env)
    assert piped.returncode == 0, piped.stderr
    header, row = piped.stdout.splitlines()
    assert header.split() == ["RUN", "NAME", "POOL", "STATE", "AGE", "JOB", "JOB", "ID"]
    assert row.startswith(run_id) and pool in row and "Running" in row

    code, out = in_terminal(["status", "--pool", pool], env)
    assert code == 0, out
    assert "Runs in flight" in out and "Job ID" in out
    assert run_id in out and "Running" in out

    as_json = pushpool("status", "--pool", pool, "--json", env=env)
    assert [r["run_id"] for r in json.loads(as_json.stdout)] == [run_id]
    prefect.set_state(run_id, "CANCELLED", force=True)
