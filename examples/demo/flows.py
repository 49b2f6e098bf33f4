"""The demo's sample flows (deployed with the stock Prefect API, executed by `prefect flow-run execute`)."""

import os
import time

from prefect import flow, task


@task
def add(a: int, b: int) -> int:
    return a + b


@flow(log_prints=True)
def etl(n: int = 3) -> int:
    total = sum(add(i, i) for i in range(n))
    print(f"etl total={total} (pid {os.getpid()})")
    return total


@flow
def broken() -> None:
    raise RuntimeError("this flow fails on purpose")


@flow(log_prints=True)
def long_job(seconds: int = 300) -> None:
    print(f"working for {seconds}s (pid {os.getpid()})")
    time.sleep(seconds)
