"""A local Docker registry (Registry HTTP API v2, read-only) on 127.0.0.1: images with the platforms a test gives
them, behind an anonymous Bearer token as Docker Hub does, or refusing anonymous pulls as a private registry does."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class ImageRegistry:
    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}  # "repo:tag" -> manifest
        self.blobs: dict[str, dict[str, Any]] = {}
        self.private: set[str] = set()
        self.hits: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_index(self, repo: str, tag: str, platforms: list[str]) -> str:
        """An image whose manifest list offers ``platforms`` (``os/arch[/variant]``); returns its reference."""
        entries = []
        for platform in platforms:
            os_, arch, *variant = platform.split("/")
            entry = {
                "mediaType": MANIFEST,
                "digest": f"sha256:{hashlib.sha256(platform.encode()).hexdigest()}",
                "size": 1,
                "platform": {"os": os_, "architecture": arch},
            }
            if variant:
                entry["platform"]["variant"] = variant[0]
            entries.append(entry)
        self.images[f"{repo}:{tag}"] = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
        return f"{self.host}/{repo}:{tag}"

    def add_single(self, repo: str, tag: str, arch: str) -> str:
        """An image with one manifest (no list): its platform is in its config blob."""
        config = {"architecture": arch, "os": "linux"}
        digest = f"sha256:{hashlib.sha256(json.dumps(config).encode()).hexdigest()}"
        self.blobs[digest] = config
        self.images[f"{repo}:{tag}"] = {"schemaVersion": 2, "mediaType": MANIFEST, "config": {"digest": digest}}
        return f"{self.host}/{repo}:{tag}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                registry.hits.append(path)
                if path == "/token":
                    return self._send(200, {"token": "anonymous-pull"})
                parts = path.split("/")  # /v2/<repo...>/manifests/<ref> | /v2/<repo...>/blobs/<digest>
                repo, kind, ref = "/".join(parts[2:-2]), parts[-2], parts[-1]
                if repo in registry.private and self.headers.get("Authorization") is None:
                    return self._send(401, {}, {"WWW-Authenticate": 'Basic realm="private"'})
                if self.headers.get("Authorization") != "Bearer anonymous-pull" and repo not in registry.private:
                    challenge = (
                        f'Bearer realm="http://{registry.host}/token",service="local",scope="repository:{repo}:pull"'
                    )
                    return self._send(401, {}, {"WWW-Authenticate": challenge})
                if kind == "manifests" and f"{repo}:{ref}" in registry.images:
                    manifest = registry.images[f"{repo}:{ref}"]
                    return self._send(200, manifest, {"Content-Type": manifest["mediaType"]})
                if kind == "blobs" and ref in registry.blobs:
                    return self._send(200, registry.blobs[ref])
                return self._send(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})

        return Handler
