"""The HTTP server every local emulator and test endpoint runs on: the standard library's threading server with a
listen backlog a burst fits in. Its default (5 pending connections) resets connections when 20 threads connect at
once on a loaded machine — a failure of the emulator, not of what it stands for (seen: Cloud Tasks arming in a full
run), as serve's own server sets its backlog for (``entrypoints/serve.py``)."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class LocalHTTPServer(ThreadingHTTPServer):
    request_queue_size = 128
