"""End to end on Google's function runtime, locally: the real Prefect server's automation calls the ``submit``
function served by functions-framework on 127.0.0.1, which creates the job on the local Cloud Run Admin API with
Application Default Credentials (a service-account key file whose token endpoint is the emulator's: no metadata
server, no Google). The container command and environment the emulator received are run here and the real flow
completes; the ``monitor`` function then gets a real-shaped Pub/Sub CloudEvent and deletes the finished run's job.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pushpool import localserver
from pushpool.usecases.provision import provision_pool

from tests.gcp_emulator import CloudRunEmulator
from tests.helpers import PrefectHelper, make_deps, run_as_its_container

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "pushpool-test"
KEY = "pnu_functions_key_do_not_log"
TOKEN = "fn-webhook-token"


def _key_file(path: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": uuid.uuid4().hex,
                "private_key": pem,
                "client_email": f"pushpool-submit@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


def _signed_by(authorizations: list[str | None]) -> set[str]:
    """Who signed the Bearer tokens the Cloud Run client sent: ADC read the key file (a service account's requests
    carry a JWT it signs itself, or an access token from the key's token_uri — the emulator's)."""
    signers = set()
    for header in authorizations:
        token = (header or "").removeprefix("Bearer ")
        if token.count(".") == 2:
            payload = token.split(".")[1]
            signers.add(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"])
        elif token:
            signers.add(
                f"pushpool-submit@{PROJECT}.iam.gserviceaccount.com" if token.startswith("ya29.local-") else token
            )
    return signers


class Function:
    """``functions-framework --target <name>`` on 127.0.0.1, as a process of its own."""

    def __init__(
        self, target: str, env: dict[str, str], log: Path, signature: str = "http", port: int | None = None
    ) -> None:
        self.port = port or localserver.free_port()
        self.log = log
        self.process = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "functions-framework"),
                "--source",
                str(ROOT / "functions" / "gcp" / "main.py"),
                "--target",
                target,
                "--signature-type",
                signature,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{target} did not start: {log.read_text()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def emulator():
    found = CloudRunEmulator().start()
    yield found
    found.stop()


def test_webhook_to_function_to_cloud_run_and_the_flow_completes(
    prefect_api: str, prefect: PrefectHelper, emulator: CloudRunEmulator, tmp_path: Path
) -> None:
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PREFECT_API_URL": prefect_api,
        "PREFECT_API_KEY": KEY,  # Secret Manager → secret_environment_variables on Google
        "PUSHPOOL_WEBHOOK_TOKEN": TOKEN,
        "PUSHPOOL_POOL_TYPES": "cloud-run-v2:push",
        "PUSHPOOL_CLOUD_RUN_ENDPOINT": emulator.endpoint,
        "PUSHPOOL_CLOUD_LOGGING_ENDPOINT": emulator.endpoint,
        "PUSHPOOL_IMAGE_PLATFORM_CHECK": "false",  # no registry is reached from here
        "PUSHPOOL_EXIT_GRACE": "0",
        "GOOGLE_APPLICATION_CREDENTIALS": str(_key_file(tmp_path / "key.json", f"{emulator.endpoint}/token")),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "NO_GCE_CHECK": "True",
    }
    submit = Function("submit", env, tmp_path / "submit.log")
    monitor = Function("monitor", env, tmp_path / "monitor.log", signature="cloudevent")
    deps = make_deps(prefect_api, tmp_path, webhook_tokens=(TOKEN,))
    try:
        pool = prefect.unique("cloudrun-fn")
        provision_pool(
            deps,
            name=pool,
            type_name="cloud-run-v2:push",
            submit_url=submit.url,
            defaults={"project": PROJECT, "prefect_api_key_secret": {"secret": "prefect-api-key", "version": "1"}},
        )
        run_id = prefect.create_run(prefect.create_deployment(pool, "flows.py:hello"), parameters={"who": "gcp"})
        deadline = time.monotonic() + 60
        while not prefect.read_run(run_id).get("infrastructure_pid") and time.monotonic() < deadline:
            time.sleep(0.2)
        execution = prefect.read_run(run_id)["infrastructure_pid"]
        assert execution and execution.startswith(f"projects/{PROJECT}/locations/us-central1/jobs/pushpool-"), (
            prefect.states(run_id),
            (tmp_path / "submit.log").read_text()[-3000:],
        )
        assert _signed_by(emulator.authorizations) == {f"pushpool-submit@{PROJECT}.iam.gserviceaccount.com"}

        job = execution.split("/executions/")[0]
        container = emulator.received(job)["template"]["template"]["containers"][0]
        job_env = {e["name"]: e.get("value") for e in container["env"]}
        assert job_env["PREFECT_API_KEY"] is None  # a secretKeyRef, resolved by Cloud Run, never a value
        job_env["PREFECT_API_KEY"] = KEY
        run_as_its_container(container["command"], job_env, tmp_path)
        assert prefect.state(run_id)[0] == "COMPLETED"

        emulator.exit(execution, 0, ["hello from gcp"])
        message = {"data": base64.b64encode(b"tick").decode(), "messageId": "1", "publishTime": "2026-12-01T00:00:00Z"}
        answer = httpx.post(
            monitor.url,
            json={"message": message, "subscription": f"projects/{PROJECT}/subscriptions/pushpool-monitor"},
            headers={
                "ce-id": "1",
                "ce-specversion": "1.0",
                "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                "ce-source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/pushpool-monitor",
            },
            timeout=60,
        )
        assert answer.status_code == 200, (tmp_path / "monitor.log").read_text()[-3000:]
        assert job not in emulator.jobs  # the finished run's job was deleted by the monitor
    finally:
        submit.stop()
        monitor.stop()
        deps.orchestrator.close()

    logs = (tmp_path / "submit.log").read_text() + (tmp_path / "monitor.log").read_text()
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(r.get("message") == "submit answered" and r.get("outcome") == "submitted" for r in records), logs
    assert any(r.get("message") == "monitor tick" and r.get("severity") == "INFO" for r in records), logs
    assert KEY not in logs and TOKEN not in logs
