"""Output: messages, errors and warnings (styled on a terminal, verbatim otherwise), ``--output json``, the plan panel,
the [y/n] question, and the provisioning commands' terminal session (spinner, plan, progress)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from pushpool.providers.provisioning import Step


# --- output ----------------------------------------------------------------------------------------------------------


def _tty() -> bool:
    """Whether stdout is a terminal: rich output there, plain text otherwise."""
    return sys.stdout.isatty()


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _say(text: str, style: str | None = None) -> None:
    """A message on stdout: styled on a terminal (never re-wrapped, no markup), verbatim otherwise."""
    if _tty():
        _console().print(text, style=style, markup=False, soft_wrap=True)
    else:
        print(text, flush=True)


def _error(message: str) -> None:
    line = f"pushpool: error: {message}"
    if sys.stderr.isatty():
        _console(stderr=True).print(line, style="red", markup=False, soft_wrap=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _output_json(output: str | None, as_json: bool = False) -> bool:
    """Whether ``--output``/``--json`` ask for JSON (Prefect's ``--output json``; ``--json`` is kept as its alias)."""
    import typer

    if output is not None and output.lower() != "json":
        raise typer.BadParameter("only 'json' output format is supported", param_hint="'--output'")
    return as_json or output is not None


def _warn(message: str) -> None:
    line = f"pushpool: warning: {message}"
    if sys.stderr.isatty():
        _console(stderr=True).print(line, style="yellow", markup=False, soft_wrap=True)
    else:
        print(line, file=sys.stderr, flush=True)


def _exit(code: int) -> None:
    import typer

    if code:
        raise typer.Exit(code)


_PLAN_STYLES = (("create", "green"), ("update", "yellow"), ("already exists:", "dim"), ("delete", "red"))


def _plan_panel(plan: str) -> RenderableType:
    """The plan (the text box of ``render_plan``) in a rich panel, each action coloured."""
    from rich.panel import Panel
    from rich.text import Text

    lines = plan.splitlines()
    if len(lines) > 2 and all(line.startswith("| ") and line.endswith(" |") for line in lines[1:-1]):
        lines = [line[2:-2].rstrip() for line in lines[1:-1]]
    text = Text()
    for i, line in enumerate(lines):
        action = line.lstrip(" -")
        style = "bold" if i == 0 else next((s for verb, s in _PLAN_STYLES if action.startswith(verb)), None)
        text.append(line + ("\n" if i < len(lines) - 1 else ""), style=style)
    return Panel(text, expand=False)


def _ask(question: str, console: Console) -> bool:
    """A real [y/n] question: asked again until the answer is y, yes, n or no."""
    from rich.prompt import Confirm

    class YesNo(Confirm):
        def process_response(self, value: str) -> bool:
            answer = value.strip().lower()
            return super().process_response({"yes": "y", "no": "n"}.get(answer, answer))

    return YesNo.ask(question, console=console)


class _InfraSession:
    """The terminal side of provision-infra and deprovision, around the use-case call.

    A spinner while the cloud is read; then ``confirm`` (the use-case's callback) shows the plan and asks; then
    ``progress`` is called before each step is applied: a rich progress bar with one line per step above it on a
    terminal, one plain line per step otherwise, and a final 100% line once everything succeeded.
    """

    VERBS = {"create": "Provisioning", "update": "Updating", "exists": "Already exists:", "delete": "Removing"}
    STYLES = {"create": "green", "update": "yellow", "exists": "dim", "delete": "red"}

    def __init__(self, question: str, *, reading: str, yes: bool, label: str = "Infrastructure") -> None:
        self.question, self.reading, self.yes, self.label = question, reading, yes, label
        self.console = _console() if _tty() else None
        self._status: Any = None
        self._bar: Any = None
        self._task: Any = None
        self._total = 0

    def __enter__(self) -> _InfraSession:
        if self.console is not None:
            self._status = self.console.status(self.reading)
            self._status.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._stop_status()
        if self._bar is not None:
            if exc_type is None:
                self._bar.update(self._task, completed=self._total, description=self.label)
            self._bar.stop()
        elif exc_type is None and self._total:
            print(f"{self.label} " + "━" * 40 + " 100%", flush=True)

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def confirm(self, plan: str) -> bool:
        self._stop_status()
        if self.console is None:
            print(plan, flush=True)
        else:
            self.console.print(_plan_panel(plan))
        if self.yes or not sys.stdin.isatty():
            return True
        return _ask(self.question, self.console or _console())

    def progress(self, index: int, total: int, step: Step) -> None:
        verb = self.VERBS.get(step.action, step.action)
        line = f"[{index}/{total}] {verb} {step.resource} {step.name}"
        self._total = total
        if self.console is None:
            print(line, flush=True)
            return
        if self._bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._stop_status()
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task(self.label, total=total)
            self._bar.start()
        self._bar.update(self._task, completed=index - 1, description=f"{verb} {step.resource}", refresh=True)
        self._bar.console.print(line, style=self.STYLES.get(step.action), markup=False, soft_wrap=True)
