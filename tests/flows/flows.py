"""Flows the tests and the demo deploy. Executed for real by `prefect flow-run execute`."""

import os
import time

from prefect import flow, task


@task
def greet(who: str) -> str:
    return f"hello {who}"


@flow(log_prints=True)
def hello(who: str = "world") -> str:
    message = greet(who)
    print(f"{message} from pid {os.getpid()}")
    return message


@flow
def fail(reason: str = "boom") -> None:
    raise ValueError(reason)


@flow(log_prints=True)
def sleeper(seconds: float = 60) -> None:
    print(f"sleeping {seconds}s in pid {os.getpid()}")
    time.sleep(seconds)
