"""pushpool: push work pools for any Prefect server.

The package is the adapter library shared by the three functions (submit, monitor, provision) and by
``pushpool serve``. Where things live: ``usecases`` (what pushpool does), ``prefect_api`` (the Prefect REST client and
its models), ``providers`` (one folder per compute provider, one registry), ``templates`` (rendering with Prefect's
semantics), ``entrypoints`` (HTTP handlers, serve, the CLI, the Lambda adapter) and ``settings``.
"""

__version__ = "0.1.0"
