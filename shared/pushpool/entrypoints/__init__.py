"""Entry points: the HTTP handlers (``http``) shared by every runtime, ``pushpool serve`` (``serve`` with its event
stream trigger), the CLI (``cli``), and one adapter per cloud function runtime (``aws_lambda``). Thin: they parse,
authenticate, call one use-case and shape the answer."""
