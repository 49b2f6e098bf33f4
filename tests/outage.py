"""A TCP proxy in front of an HTTP API that a test takes down and brings back: a real outage as a client meets it.

``down()`` cuts every open connection (a request in flight fails half-way) and closes the listening socket
(new connections are refused), as when the server's process dies; ``up()`` listens on the same port again, as when it
is restarted. The server behind it keeps running: the reliability suite takes the session's Prefect server away from
pushpool alone, mid-tick, while the test itself still reads the runs directly — in a second, not the many seconds a
real Prefect server takes to stop and start.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit


class OutageProxy:
    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: threading.Thread | None = None  # the accepting thread while up
        self._stopped = threading.Event()
        self.downs = 0

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> OutageProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._stopped = stopped = threading.Event()
        self._listener = threading.Thread(
            target=self._accept, args=(listener, stopped), name="outage-proxy", daemon=True
        )
        self._listener.start()
        return self

    def down(self) -> None:
        accepting, self._listener = self._listener, None
        if accepting is None:
            return
        self.downs += 1
        self._stopped.set()
        accepting.join()  # it closes the listening socket: the port is free for up() again
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            _cut(sock)

    def _accept(self, listener: socket.socket, stopped: threading.Event) -> None:
        with listener:
            while not stopped.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(self.target)
                except OSError:
                    _cut(client)
                    continue
                with self._lock:
                    self._open.update((client, upstream))
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _cut(src)
            _cut(dst)


def _cut(sock: socket.socket) -> None:
    """Cut a connection as a dead server's kernel does. Shutdown first: it wakes the pump blocked reading the socket
    (a bare close from another thread would leave the connection open until that read returns)."""
    for cut in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            cut()
        except OSError:
            pass
