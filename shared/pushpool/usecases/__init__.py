"""The use-cases: what pushpool does, with no provider, SDK or entry point named.

* ``submit`` — one ready flow run becomes one job (admission of pause flags and limits in ``admission``).
* ``monitor`` — one tick: due runs dispatched, in-flight runs reconciled (policy in ``reconcile``).
* ``provision`` — the Prefect side of a pool (pool, Webhook block, automation); ``provision_infra`` — the cloud side
  through a provider's provisioner, then the Prefect side.
* ``job_spec`` — a flow run rendered into a provider's typed job; ``run_states`` — state changes shared by them.

Each takes its dependencies (``deps.Deps``: settings, the Prefect client, the served providers, the clock) as an
argument and never reads the environment.
"""
