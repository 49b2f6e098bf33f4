"""A local Azure Storage Queue service on 127.0.0.1 over TLS (Azurite's path style: ``https://127.0.0.1:<port>/
<account>/<queue>``), for the real ``azure.storage.queue`` client with a token credential (azure-core sends bearer
tokens over https only, so the production auth policy stays in the path).

It implements what pushpool and the Functions host's queue listener use — Put Message, Get Messages, Delete
Message — with the service's rules from its REST reference: ``x-ms-version`` and a bearer token required (else 401/
403; ``add_identity`` scopes tokens to queues: 401 InvalidAuthenticationInfo / 403 AuthorizationPermissionMismatch),
``visibilitytimeout`` 0…7 days and below ``messagettl`` (-1: never expires), a message of at most 64 KiB, an
unknown queue 404 ``QueueNotFound``, a wrong pop receipt 404 ``MessageNotFound``; errors as Storage's XML with
``x-ms-error-code``. A message is invisible until its visibility timeout ends, then handed out by Get Messages.
``bad_days`` (tests/faults.py) answers the service's bad days: 503 ``ServerBusy`` (Storage's throttling), 500.
``requests`` records every call (method, path, query) for counting.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

from tests.arm_emulator import self_signed_certificate
from tests.faults import Faults, storage_answer
from tests.local_http import LocalHTTPServer

ACCOUNT = "pushpooltest"
MAX_VISIBILITY = 7 * 24 * 3600
MAX_MESSAGE_BYTES = 64 * 1024
NEVER = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


class StorageError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _rfc1123(when: dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(dt.timezone.utc), usegmt=True)


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[0]
    try:
        return int(raw)
    except ValueError:
        raise StorageError(400, "InvalidQueryParameterValue", f"A query parameter's value is invalid: {name}") from None


class StorageQueueEmulator:
    def __init__(self, workdir: Path) -> None:
        self.cert, key = self_signed_certificate(workdir)
        self.lock = threading.RLock()
        self.queues: dict[str, list[dict[str, Any]]] = {}  # queue -> messages
        self._gone: dict[str, list[dict[str, Any]]] = {}  # queue -> deleted messages
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.authorizations: list[str | None] = []
        self.bad_days = Faults()  # operations: "METHOD /account/queue/messages" (tests/faults.py)
        self.identities: dict[str, set[str]] = {}  # bearer token -> the queues its role assignment covers
        self.callers: list[tuple[str, str, str | None]] = []  # (method, queue, token) of each call
        self.server = LocalHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.account_url = f"https://127.0.0.1:{self.server.server_address[1]}/{ACCOUNT}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StorageQueueEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_queue(self, name: str) -> str:
        with self.lock:
            self.queues.setdefault(name, [])
        return f"{self.account_url}/{name}"

    def count(self, method: str, fragment: str = "") -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and fragment in p)

    def sent(self, queue: str) -> list[dict[str, Any]]:
        """What Put Message received on ``queue``: text, visibility timeout, ttl (every message, read or not)."""
        with self.lock:
            every = [*self.queues.get(queue, []), *self._gone.get(queue, [])]
            return [dict(m) for m in sorted(every, key=lambda m: m["inserted"])]

    # -- the service ---------------------------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append((method, path, query))
            self.authorizations.append(headers.get("Authorization"))
        if bad := self.bad_days.check(f"{method} {path}"):
            raise StorageError(*storage_answer(bad))
        if not headers.get("x-ms-version"):
            raise StorageError(
                400,
                "MissingRequiredHeader",
                "A mandatory HTTP header is not specified: x-ms-version",
            )
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            raise StorageError(401, "NoAuthenticationInformation", "Server failed to authenticate the request.")
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != ACCOUNT or parts[2] != "messages":
            raise StorageError(400, "InvalidUri", f"The requested URI does not represent any resource: {path}")
        queue = parts[1]
        self._authorize(method, queue, auth.removeprefix("Bearer "))
        with self.lock:
            if queue not in self.queues:
                raise StorageError(404, "QueueNotFound", "The specified queue does not exist.")
        if method == "POST" and len(parts) == 3:
            return self._put(queue, query, body)
        if method == "GET" and len(parts) == 3:
            return self._get(queue, query)
        if method == "DELETE" and len(parts) == 4:
            return self._delete(queue, parts[3], query)
        raise StorageError(405, "UnsupportedHttpVerb", f"{method} is not supported here")

    # -- identities: who may use which queue ----------------------------------------------------------------------

    def add_identity(self, token: str, queues: set[str]) -> None:
        """An identity (its bearer token) with a queue data role on ``queues`` only; once any is added, a call with
        an unknown token is 401 and one on a queue its role does not cover is 403, as Azure Storage answers."""
        with self.lock:
            self.identities[token] = set(queues)

    def _authorize(self, method: str, queue: str, token: str) -> None:
        with self.lock:
            self.callers.append((method, queue, token))
            if not self.identities:
                return
            allowed = self.identities.get(token)
        if allowed is None:
            raise StorageError(401, "InvalidAuthenticationInfo", "Server failed to authenticate the request.")
        if queue not in allowed:
            raise StorageError(
                403,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            )

    def _put(self, queue: str, query: dict[str, list[str]], body: bytes) -> tuple[int, bytes]:
        visibility = _int(query, "visibilitytimeout", 0)
        ttl = _int(query, "messagettl", 7 * 24 * 3600)
        if not 0 <= visibility <= MAX_VISIBILITY:
            raise StorageError(400, "OutOfRangeQueryParameterValue", "visibilitytimeout must be 0 to 604800 seconds")
        if ttl != -1 and (ttl < 1 or visibility >= ttl):
            raise StorageError(400, "OutOfRangeQueryParameterValue", "messagettl must be -1 or above visibilitytimeout")
        try:
            text = ElementTree.fromstring(body).findtext("MessageText")
        except ElementTree.ParseError:
            raise StorageError(400, "InvalidXmlDocument", "XML specified is not syntactically valid.") from None
        if text is None:
            raise StorageError(400, "InvalidXmlNodeValue", "MessageText is required")
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            raise StorageError(413, "RequestBodyTooLarge", "The message exceeds 64 KiB")
        now = dt.datetime.now(dt.timezone.utc)
        message = {
            "id": str(uuid.uuid4()),
            "text": text,
            "visibility": visibility,
            "ttl": ttl,
            "inserted": now,
            "expires": now + dt.timedelta(seconds=ttl)
            if ttl != -1
            else dt.datetime.max.replace(tzinfo=dt.timezone.utc),
            "visible": now + dt.timedelta(seconds=visibility),
            "receipt": uuid.uuid4().hex,
            "dequeued": 0,
        }
        with self.lock:
            self.queues[queue].append(message)
        return 201, self._xml([message], text=False)

    def _get(self, queue: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        count = _int(query, "numofmessages", 1)
        lease = _int(query, "visibilitytimeout", 30)
        if not 1 <= count <= 32 or not 1 <= lease <= MAX_VISIBILITY:
            raise StorageError(400, "OutOfRangeQueryParameterValue", "numofmessages 1-32, visibilitytimeout 1-604800")
        now = dt.datetime.now(dt.timezone.utc)
        with self.lock:
            self.queues[queue] = [m for m in self.queues[queue] if m["expires"] > now]
            ready = sorted((m for m in self.queues[queue] if m["visible"] <= now), key=lambda m: m["visible"])[:count]
            for message in ready:
                message["visible"] = now + dt.timedelta(seconds=lease)
                message["receipt"] = uuid.uuid4().hex
                message["dequeued"] += 1
            return 200, self._xml(ready, text=True)

    def _delete(self, queue: str, message_id: str, query: dict[str, list[str]]) -> tuple[int, bytes]:
        receipt = query.get("popreceipt", [""])[0]
        with self.lock:
            for message in self.queues[queue]:
                if message["id"] == message_id and message["receipt"] == receipt:
                    self.queues[queue].remove(message)
                    self._gone.setdefault(queue, []).append(message)
                    return 204, b""
        raise StorageError(404, "MessageNotFound", "The specified message does not exist.")

    @staticmethod
    def _xml(messages: list[dict[str, Any]], *, text: bool) -> bytes:
        root = ElementTree.Element("QueueMessagesList")
        for message in messages:
            node = ElementTree.SubElement(root, "QueueMessage")
            fields = {
                "MessageId": message["id"],
                "InsertionTime": _rfc1123(message["inserted"]),
                "ExpirationTime": _rfc1123(min(message["expires"], message["inserted"] + dt.timedelta(days=36500))),
                "PopReceipt": message["receipt"],
                "TimeNextVisible": _rfc1123(message["visible"]),
            }
            if text:
                fields.update({"DequeueCount": str(message["dequeued"]), "MessageText": message["text"]})
            for key, value in fields.items():
                ElementTree.SubElement(node, key).text = value
        return b'<?xml version="1.0" encoding="utf-8"?>' + ElementTree.tostring(root)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                extra: dict[str, str] = {}
                try:
                    code, data = emulator.handle(self.command, url.path, parse_qs(url.query), self.headers, raw)
                except StorageError as exc:
                    code, extra = exc.status, {"x-ms-error-code": exc.code}
                    data = (
                        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{exc.code}</Code>'
                        f"<Message>{exc.message}</Message></Error>"
                    ).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", str(uuid.uuid4()))
                self.send_header("x-ms-version", self.headers.get("x-ms-version") or "")
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        return Handler
