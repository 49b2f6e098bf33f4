"""pushpool as deployed on AWS, on this machine: ``functions/submit/app.py`` and ``functions/monitor/app.py`` invoked
the way ``infra/template.yaml`` wires them, for the punctuality section (``bench/punctuality.py``).

- **Function URL** → submit: a tiny HTTP adapter turns each request (Prefect's call-webhook automation) into a
  Function URL event (payload 2.0) and invokes submit's ``lambda_handler``.
- **Delay queue** (SQS on moto, ``PUSHPOOL_DELAY_QUEUE_URL``) → submit: pollers do what Lambda's SQS event source
  mapping does: long-poll ``ReceiveMessage`` (batch size 10, as in the template) → invoke submit with the SQS
  records → delete the records it did not report as failed (``ReportBatchItemFailures``). Five pollers: the event
  source mapping starts with five concurrent batches.
- **MonitorSchedule** → monitor: a ScheduleV2-shaped event every ``--monitor-interval`` seconds (``rate(1 minute)``).

Each function runs in warm execution environments: worker processes that loaded its ``app.py`` once (a process per
concurrent invocation, as Lambda gives each its own environment); cold starts are the cold-start section's subject.
Everything that happens is one JSON line on stdout (``lambda: {...}``), read back by the bench.

Run as ``python bench/lambdas.py --port P --queue-url URL``; the environment carries the function's settings
(``PREFECT_API_URL``, ``PUSHPOOL_WEBHOOK_TOKEN``, ``PUSHPOOL_POOL_TYPES``, moto's endpoint).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SQS_BATCH_SIZE = 10  # infra/template.yaml: DelayedTrigger BatchSize
SQS_POLLERS = 5
SCHEDULE_EVENT = {
    "version": "0",
    "id": "bench-tick",
    "detail-type": "Scheduled Event",
    "source": "aws.scheduler",
    "account": "123456789012",
    "time": "2026-11-21T00:00:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/pushpool-monitor"],
    "detail": "{}",
}

_function: Any = None  # the loaded app.py, in each worker process


@dataclass
class Context:
    function_name: str = "pushpool-bench"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:pushpool-bench"
    aws_request_id: str = "bench"


def _load(function: str) -> None:
    global _function
    spec = importlib.util.spec_from_file_location(f"fn_{function}", ROOT / "functions" / function / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _function = module


def _warm(seconds: float) -> int:
    from pushpool.entrypoints import aws_lambda

    aws_lambda.lambda_deps()  # settings, Prefect client, SQS trigger: built once per warm environment
    time.sleep(seconds)  # keeps this process busy, so that every environment gets one warm-up
    return os.getpid()


def _invoke(event: dict) -> tuple[Any, float, float]:
    started = time.time()
    result = _function.lambda_handler(event, Context())
    return result, started, time.time()


def emit(kind: str, **fields: Any) -> None:
    print("lambda: " + json.dumps({"kind": kind, **fields}), flush=True)


def url_event(path: str, headers: dict[str, str], body: bytes) -> dict:
    """A Lambda Function URL event, as AWS sends it (payload format 2.0)."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "bench",
            "domainName": "bench.lambda-url.us-east-1.on.aws",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "x"},
            "requestId": "bench",
            "routeKey": "$default",
            "stage": "$default",
            "time": "21/Nov/2026:00:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": body.decode("utf-8", "replace"),
        "isBase64Encoded": False,
    }


def sqs_event(messages: list[dict], queue_arn: str) -> dict:
    """The event Lambda's SQS event source mapping sends submit."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


class Functions:
    def __init__(self, port: int, queue_url: str, environments: int, monitor_interval: float) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.submit = ProcessPoolExecutor(environments, mp_context=spawn, initializer=_load, initargs=("submit",))
        self.monitor = ProcessPoolExecutor(1, mp_context=spawn, initializer=_load, initargs=("monitor",))
        self.environments = environments
        self.queue_url = queue_url
        self.monitor_interval = monitor_interval
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True

    def start(self) -> None:
        pids = {f.result() for f in [self.submit.submit(_warm, 1.0) for _ in range(self.environments)]}
        self.monitor.submit(_warm, 0.0).result()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        for i in range(SQS_POLLERS):
            threading.Thread(target=self._poll, name=f"poller-{i}", daemon=True).start()
        threading.Thread(target=self._tick, daemon=True).start()
        emit("ready", submit_environments=len(pids), pollers=SQS_POLLERS, monitor_interval=self.monitor_interval)

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        for executor in (self.submit, self.monitor):
            processes = list((getattr(executor, "_processes", None) or {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # the environments this process started, by their handles
                process.terminate()

    def _poll(self) -> None:
        import boto3

        sqs = boto3.client("sqs")
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        while not self.stopping.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=SQS_BATCH_SIZE,
                    WaitTimeSeconds=20,
                    AttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:  # noqa: BLE001 - the queue went away at the end of the bench
                emit("poll-error", error=repr(exc)[:200])
                time.sleep(1.0)
                continue
            if not messages:
                continue
            received = time.time()
            try:
                result, started, done = self.submit.submit(_invoke, sqs_event(messages, arn)).result()
            except Exception as exc:  # noqa: BLE001 - reported; the bench reads it
                emit("invoke-error", error=repr(exc)[:200])
                continue
            failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages)
                if m["MessageId"] not in failed
            ]
            if entries:  # at most 10: one batch
                sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            for m in messages:
                try:
                    body = json.loads(m["Body"])
                except ValueError:
                    body = {}
                emit(
                    "delayed",
                    flow_run_id=body.get("flow_run_id"),
                    work_pool=body.get("work_pool"),  # a pool trigger: the invocation swept the pool
                    at=body.get("at"),
                    sent_at=int((m.get("Attributes") or {}).get("SentTimestamp", 0)) / 1000,
                    received_at=received,
                    invoked_at=started,
                    done_at=done,
                    batch=len(messages),
                    failed=m["MessageId"] in failed,
                )

    def _tick(self) -> None:
        while not self.stopping.is_set():
            started = time.time()
            try:
                report, invoked, done = self.monitor.submit(_invoke, SCHEDULE_EVENT).result()
                emit("tick", started_at=started, invoked_at=invoked, done_at=done, report=report)
            except Exception as exc:  # noqa: BLE001 - reported; the bench reads it
                emit("tick-error", started_at=started, error=repr(exc)[:200])
            self.stopping.wait(max(0.0, self.monitor_interval - (time.time() - started)))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        functions = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._answer(200, b'{"ok": true}')

            def do_POST(self) -> None:
                received = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event = url_event(self.path, dict(self.headers.items()), body)
                try:
                    result, started, done = functions.submit.submit(_invoke, event).result()
                except Exception as exc:  # noqa: BLE001 - reported; the bench reads it
                    emit("invoke-error", error=repr(exc)[:200])
                    self._answer(502, b'{"error": "invocation failed"}')
                    return
                try:
                    answer = json.loads(result.get("body") or "{}")
                except ValueError:
                    answer = {}
                emit(
                    "webhook",
                    flow_run_id=answer.get("flow_run_id"),
                    outcome=answer.get("outcome"),
                    status=result.get("statusCode"),
                    received_at=received,
                    invoked_at=started,
                    done_at=done,
                )
                self._answer(int(result.get("statusCode") or 200), (result.get("body") or "").encode())

            def _answer(self, status: int, payload: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--environments", type=int, default=8, help="warm submit environments (processes)")
    parser.add_argument("--monitor-interval", type=float, default=60.0, help="MonitorSchedule: rate(1 minute)")
    args = parser.parse_args()
    functions = Functions(args.port, args.queue_url, args.environments, args.monitor_interval)
    done = threading.Event()

    def stop(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    functions.start()
    done.wait()
    functions.stop()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
