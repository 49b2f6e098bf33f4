"""serve reads again a run that a streamed event named and Prefect does not know yet (serve._handle_streamed)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from pushpool.entrypoints import serve
from pushpool.errors import UnknownObjectError


def _answers(monkeypatch: pytest.MonkeyPatch, unknown_times: int) -> list[str]:
    calls: list[str] = []

    def handle_run_event(deps, run_id: str, **kwargs):
        calls.append(run_id)
        if len(calls) <= unknown_times:
            raise UnknownObjectError(f"unknown flow run {run_id}")
        return {"flow_run_id": run_id, "outcome": "submitted", **kwargs}

    monkeypatch.setattr(serve, "handle_run_event", handle_run_event)
    monkeypatch.setattr(serve, "STREAM_UNKNOWN_RETRIES", (0.01, 0.01, 0.01))
    return calls


def _server(stopping: bool = False) -> SimpleNamespace:
    event = threading.Event()
    if stopping:
        event.set()
    return SimpleNamespace(deps=None, stopping=event)


def test_a_run_unknown_at_first_is_handled_once_it_can_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _answers(monkeypatch, unknown_times=2)
    answer = serve.Server._handle_streamed(_server(), "r1", trigger="event-stream")
    assert answer["outcome"] == "submitted" and calls == ["r1", "r1", "r1"]


def test_a_run_that_stays_unknown_is_reported_unknown_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _answers(monkeypatch, unknown_times=99)
    with pytest.raises(UnknownObjectError):
        serve.Server._handle_streamed(_server(), "r2", trigger="event-stream")
    assert len(calls) == 4  # the first read and three more


def test_a_stopping_serve_does_not_wait_to_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _answers(monkeypatch, unknown_times=99)
    with pytest.raises(UnknownObjectError):
        serve.Server._handle_streamed(_server(stopping=True), "r3", trigger="event-stream")
    assert calls == ["r3"]
