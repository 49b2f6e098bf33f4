"""The TLS trust pushpool's HTTP clients use, made once per process.

httpx makes a new ``ssl.SSLContext`` for every client it constructs, loading certifi's bundle (or ``SSL_CERT_FILE`` /
``SSL_CERT_DIR``) each time: about 28 ms of CPU here, on every Prefect client ``Deps`` makes, every Coiled token's
client and every image-registry read. An ``SSLContext`` may be shared by any number of clients and threads, so every
client of pushpool's is given this one: the same trust httpx's default gives, paid once.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def default_context() -> ssl.SSLContext:
    """httpx's default context (``verify=True``, reading ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as httpx does), made on
    first use and the same object afterwards."""
    return httpx.create_ssl_context()
