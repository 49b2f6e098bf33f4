"""``python -m pushpool.entrypoints.cli``: the ``pushpool`` command."""

import sys

from pushpool.entrypoints.cli import main

sys.exit(main())
