"""pushpool on Azure Functions (Python v2 programming model): submit (HTTP, Prefect's call-webhook automation with
its bearer token, checked here), monitor (a timer tick), provision (HTTP, the host's admin-level key, which the
Functions host checks; the webhook token is not asked for: Prefect's API users can read it, so it authorizes submit
only), delayed (a queue trigger on the delay queue: a scheduled run's trigger firing at its time,
``pushpool.usecases.punctual``). Thin: pushpool.entrypoints.http does the work; this file only adapts the requests.

The route is anonymous at the Functions level because Prefect's Webhook block cannot add a function key header of
its own: the handler checks the bearer token (or a Standard Webhooks signature), like the Lambda function URL.
"""

from __future__ import annotations

import azure.functions as func
from pushpool.entrypoints.azure_functions import azure_deps, flush_metrics, log_event
from pushpool.entrypoints.http import handle_delayed_run, handle_monitor, handle_provision, handle_submit
from pushpool.errors import InvalidRequestError
from pushpool.usecases.event_publisher import flushed
from pushpool.usecases.metrics import flushing

app = func.FunctionApp()


metered = flushing(flush_metrics)  # the invocation's metrics, logged when it ends (docs/metrics.md)


def _answer(answer) -> func.HttpResponse:
    return func.HttpResponse(answer.json_bytes(), status_code=answer.status, mimetype="application/json")


@app.function_name("submit")
@app.route(route="submit", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@flushed(azure_deps)  # the run events of the invocation, into Prefect
@metered
def submit(req: func.HttpRequest) -> func.HttpResponse:
    deps, auth = azure_deps()
    answer = handle_submit(deps, auth, dict(req.headers), req.get_body() or b"", trigger="webhook")
    log_event(
        "submit answered",
        status=answer.status,
        outcome=answer.body.get("outcome"),
        run=answer.body.get("flow_run_id"),
        error=answer.body.get("error"),
    )
    return _answer(answer)


@app.function_name("monitor")
@app.timer_trigger(arg_name="timer", schedule="*/15 * * * * *", run_on_startup=False, use_monitor=False)
@flushed(azure_deps)  # the run events of the invocation, into Prefect
@metered
def monitor(timer: func.TimerRequest) -> None:
    deps, _ = azure_deps()
    answer = handle_monitor(deps)
    log_event(
        "monitor tick",
        status=answer.status,
        late=timer.past_due,
        **{k: v for k, v in answer.body.items() if k in ("pools", "errors")},
    )


@app.function_name("delayed")
@app.queue_trigger(arg_name="message", queue_name="%PUSHPOOL_DELAY_QUEUE_NAME%", connection="PushpoolDelayQueue")
@flushed(azure_deps)  # the run events of the invocation, into Prefect
@metered
def delayed(message: func.QueueMessage) -> None:
    """One delay-queue message (shown at its run's time): submit the run if it is due. A malformed or stale message
    is dropped; a transient failure raises, so the host delivers it again (then to the poison queue, host.json)."""
    deps, _ = azure_deps()
    try:
        answer = handle_delayed_run(deps, message.get_body())
    except InvalidRequestError as exc:
        log_event("delayed trigger dropped", error=exc.one_line(), dequeue_count=message.dequeue_count)
        return
    log_event("delayed trigger", outcome=answer.get("outcome"), run=answer.get("flow_run_id"))


@app.function_name("provision")
@app.route(route="provision", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
@flushed(azure_deps)  # the run events of the invocation, into Prefect
@metered
def provision(req: func.HttpRequest) -> func.HttpResponse:
    deps, _ = azure_deps()  # the caller was authorized by the host (AuthLevel.ADMIN)
    answer = handle_provision(deps, req.get_body() or b"")
    log_event("provision answered", status=answer.status, error=answer.body.get("error"))
    return _answer(answer)
