"""The compat suites' shared parts (tests/differential.py). The worker driver plumbing over a real pipe to a real
process: a driver started by ``start`` imports the module from a clean environment, its answers come back in order,
what an SDK prints on stdout is passed over, and a failure is answered, not raised (the driver keeps serving). The
comparison: every place two bodies differ is named, and only those."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.differential import differences, start, worker_env

DRIVER = """
import asyncio

from tests.differential import serve


class Worker:
    @staticmethod
    def get_default_base_job_template():
        print("an SDK's chatter on stdout")
        return {"job_configuration": {"command": "{{ command }}"}}


async def save_block(request):
    if request["block"] == "bad":
        raise ValueError("refused")
    return "block-" + request["name"]


asyncio.run(serve(Worker, save_block=save_block))
"""


def test_a_driver_answers_templates_and_blocks_and_reports_a_failure_as_an_answer(tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = worker_env("http://127.0.0.1:1/api", "pnu_unused", tmp_path)
    asks = start(sys.executable, driver, env, cwd=tmp_path)
    ask = next(asks)
    assert ask({"template": True}) == {"ok": True, "template": {"job_configuration": {"command": "{{ command }}"}}}
    assert ask({"block": "bad", "name": "x"}) == {"ok": False, "error": "ValueError: refused"}
    assert ask({"block": "token", "name": "n"}) == {"ok": True, "id": "block-n"}
    asks.close()  # stdin closed: the driver ends


def test_differences_names_every_place_the_bodies_differ_and_no_other() -> None:
    ours = {"job": {"cpu": 1, "env": [{"name": "A", "value": "1"}], "same": True}, "only_ours": 1, "list": [1, 2]}
    theirs = {"job": {"cpu": 2, "env": [{"name": "A", "value": "2"}], "same": True}, "list": [1, 2, 3]}
    assert differences(ours, theirs) == [
        ".job.cpu: 1 != 2",
        ".job.env[0].value: '1' != '2'",
        ".list: [1, 2] != [1, 2, 3]",
        ".only_ours: 1 != None",
    ]
    assert differences(ours, ours) == []
