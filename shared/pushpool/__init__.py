"""pushpool: push work pools for any Prefect server.

The package is the adapter library shared by the three functions (submit, monitor, provision) and by
``pushpool serve``. Modules own one thing each; start with ``submit``, ``monitor`` and ``provision`` (the
use-cases), ``orchestrator`` (the Prefect API), ``templates`` and ``backends``.
"""

__version__ = "0.1.0"
