"""Deploy the demo flows with the stock Prefect API (run with PREFECT_API_URL pointing at the server)."""

import sys
from pathlib import Path

from prefect import flow

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    pool = sys.argv[1]
    for entrypoint in ("flows.py:etl", "flows.py:broken", "flows.py:long_job"):
        deployed = flow.from_source(source=str(HERE), entrypoint=entrypoint)
        deployment_id = deployed.deploy(
            name=f"demo-{entrypoint.split(':')[1]}",
            work_pool_name=pool,
            build=False,
            push=False,
            print_next_steps=False,
        )
        print(f"{entrypoint.split(':')[1]}={deployment_id}")
    # The most common job of all: a schedule. Prefect's scheduler creates its runs; nobody triggers them.
    scheduled = flow.from_source(source=str(HERE), entrypoint="flows.py:etl").deploy(
        name="demo-etl-every-10s",
        work_pool_name=pool,
        interval=10,
        build=False,
        push=False,
        print_next_steps=False,
    )
    print(f"scheduled={scheduled}")
