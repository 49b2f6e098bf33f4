"""The command line's help and options follow Prefect's CLI (issue 28 item 5): flags show no value placeholder, usage
lines name arguments in capitals, help paragraphs are wrapped by the terminal only, every command that prints a result
takes ``-o/--output json`` (``--json`` kept, hidden, where it existed), ``delete``'s ``--credentials`` is not shown,
and ``pushpool usage`` says what it measures and whose limits they are."""

from __future__ import annotations

import re

import pytest
from pushpool.entrypoints import cli
from pushpool.usecases.usage import Usage

COMMANDS = [
    ("serve",),
    ("work-pool", "create"),
    ("work-pool", "provision-infra"),
    ("work-pool", "deprovision"),
    ("work-pool", "delete"),
    ("work-pool", "ls"),
    ("work-pool", "inspect"),
    ("status",),
    ("monitor",),
    ("usage",),
    ("logs",),
]
PRINTING = [c for c in COMMANDS if c not in (("serve",), ("monitor",))]  # monitor prints JSON only


@pytest.fixture
def env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PUSHPOOL_HOME", str(tmp_path / "pp"))


def help_of(command: tuple[str, ...], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, width=100) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    assert cli.main([*command, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [(), ("work-pool",), *COMMANDS])
def test_help_shows_flags_without_a_placeholder_and_arguments_in_capitals(
    env, command: tuple[str, ...], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = help_of(command, capsys, monkeypatch)
    assert "<bool>" not in shown
    usage = next(line for line in shown.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    if command in (("work-pool", "create"), ("work-pool", "inspect"), ("work-pool", "delete")):
        assert usage.split() == ["Usage:", "pushpool", *command, "[OPTIONS]", "NAME"]
    if command == ("logs",):
        assert usage.split()[-1] == "FLOW_RUN"


def test_serve_help_wraps_its_paragraphs_to_the_terminal_only(
    env, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = help_of(("serve",), capsys, monkeypatch, width=2000)
    paragraph = next(line for line in shown.splitlines() if "Prefect's automations call" in line)
    assert "URL and a bearer token" in paragraph and paragraph.rstrip().endswith("Stop it with Ctrl-C or SIGTERM.")


@pytest.mark.parametrize("command", PRINTING)
def test_every_command_that_prints_takes_output_json(
    env, command: tuple[str, ...], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = help_of(command, capsys, monkeypatch)
    assert re.search(r"--output\s+-o\s+FORMAT", shown), shown
    assert "--json" not in shown  # one way shown: Prefect's
    args = [
        *command,
        *(["x"] if command[-1] in ("create", "provision-infra", "deprovision", "delete", "inspect", "logs") else []),
    ]
    args += ["--type", "process:push"] if command[-1] == "create" else []
    # Accepted (the command goes on, to find no Prefect API), where an unknown option would be a usage error.
    assert cli.main([*args, "--output", "json"]) == 2
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err
    assert cli.main([*args, "-o", "yaml"]) == 2
    assert "only 'json' output format is supported" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["work-pool", "create", "x", "--type", "process:push", "--json"],
        ["work-pool", "provision-infra", "x", "--json"],
        ["work-pool", "deprovision", "x", "--json"],
        ["status", "--json"],
        ["work-pool", "delete", "x", "--credentials", "access-key"],
        ["work-pool", "deprovision", "x", "--credentials", "role"],
    ],
)
def test_options_scripts_may_use_are_still_accepted(env, args: list[str], capsys: pytest.CaptureFixture) -> None:
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "PREFECT_API_URL is not set" in err and "No such option" not in err


def test_delete_does_not_describe_creating_credentials(
    env, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in (("work-pool", "delete"), ("work-pool", "deprovision")):
        shown = help_of(command, capsys, monkeypatch)
        assert "--credentials" not in shown and "create an IAM user" not in shown


def test_usage_says_what_it_measures_and_that_the_limits_are_settings() -> None:
    usage = Usage(
        workspace="local",
        tier="free",
        month="2026-12",
        compute_hours_used=1.5,
        compute_hours_limit=10,
        runs_in_flight=0,
        concurrency_limit=1,
        pools=["m"],
        pool_limit=1,
        memory_mb=2048,
        max_run_time_seconds=86400,
    )
    text = usage.summary()
    assert "free tier" not in text
    first, limits = text.splitlines()[:2]
    assert first == "Managed execution (prefect:managed pools) of workspace local, 2026-12 (UTC)"
    assert "tier 'free'" in limits and "PUSHPOOL_MANAGED_TIER" in limits and "settings" in limits
