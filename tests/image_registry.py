"""A local Docker registry (Registry HTTP API v2, read-only) on 127.0.0.1: images with the platforms a test gives
them, behind an anonymous Bearer token as Docker Hub does, or refusing anonymous pulls as a private registry does, or
demanding credentials as the clouds' registries do (``protect``): ECR's ``Basic`` challenge answered with the
``AWS:<password>`` of GetAuthorizationToken, or Artifact Registry's ``Bearer`` challenge whose realm gives a registry
token for ``Basic oauth2accesstoken:<Google access token>``.

Any registry host (``123456789012.dkr.ecr.us-east-1.amazonaws.com``, ``us-docker.pkg.dev``) reaches it through
``routed_client``: no real hostname is resolved. Every request's Host and Authorization are recorded (``seen``)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.local_http import LocalHTTPServer

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class ImageRegistry:
    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}  # "repo:tag" -> manifest
        self.blobs: dict[str, dict[str, Any]] = {}
        self.private: set[str] = set()
        # repo -> (scheme, user, password, realm): what ``protect`` demands for it.
        self.protected: dict[str, tuple[str, str, str, str]] = {}
        self.issued: dict[str, str] = {}  # registry token -> the repo it may pull
        self.hits: list[str] = []
        self.seen: list[tuple[str, str, str | None]] = []  # (Host, path, Authorization) of every request
        self.server = LocalHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def protect(self, repo: str, scheme: str, user: str, password: str, realm: str = "") -> None:
        """``repo`` answers only with credentials: ``"basic"`` (ECR: ``Basic user:password`` on every request) or
        ``"bearer"`` (Artifact Registry: a Bearer challenge whose realm, ``<realm>/v2/token``, gives a registry token
        for ``Basic user:password`` and this repo's pull scope; ``realm`` defaults to this server)."""
        self.protected[repo] = (scheme, user, password, realm or f"http://{self.host}")

    def add_index(self, repo: str, tag: str, platforms: list[str], host: str = "") -> str:
        """An image whose manifest list offers ``platforms`` (``os/arch[/variant]``); returns its reference (on
        ``host``, any name routed here, else this server's address)."""
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
        return f"{host or self.host}/{repo}:{tag}"

    def add_single(self, repo: str, tag: str, arch: str, host: str = "") -> str:
        """An image with one manifest (no list): its platform is in its config blob."""
        config = {"architecture": arch, "os": "linux"}
        digest = f"sha256:{hashlib.sha256(json.dumps(config).encode()).hexdigest()}"
        self.blobs[digest] = config
        self.images[f"{repo}:{tag}"] = {"schemaVersion": 2, "mediaType": MANIFEST, "config": {"digest": digest}}
        return f"{host or self.host}/{repo}:{tag}"

    def routed_client(self) -> Callable[[], httpx.Client]:
        """An httpx.Client factory (ImagePlatforms' ``client``) that sends every host's requests here, over HTTP."""
        port = self.server.server_address[1]

        class Routed(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
                return super().handle_request(request)

        return lambda: httpx.Client(transport=Routed(), timeout=5.0, follow_redirects=True)

    def authorizations_to(self, host: str) -> list[str]:
        """Every Authorization header a request to ``host`` (its Host header) carried."""
        return [auth for seen_host, _, auth in self.seen if seen_host == host and auth]

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

            def _basic(self, user: str, password: str) -> bool:
                expected = base64.b64encode(f"{user}:{password}".encode()).decode()
                return secrets.compare_digest(self.headers.get("Authorization") or "", f"Basic {expected}")

            def _token(self, query: str) -> None:
                """The realm of a protected repo: a registry token for its Basic credentials and pull scope."""
                scope = (parse_qs(query).get("scope") or [""])[0]  # repository:<repo>:pull
                repo = scope.removeprefix("repository:").rsplit(":", 1)[0]
                _, user, password, _ = registry.protected.get(repo, ("", "", "", ""))
                if not user or not self._basic(user, password):
                    return self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                token = f"registry-{secrets.token_hex(8)}"
                registry.issued[token] = repo
                return self._send(200, {"token": token, "expires_in": 3600})

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                path = split.path
                registry.hits.append(path)
                registry.seen.append((self.headers.get("Host") or "", path, self.headers.get("Authorization")))
                if path == "/v2/token":
                    return self._token(split.query)
                if path == "/token":
                    return self._send(200, {"token": "anonymous-pull"})
                parts = path.split("/")  # /v2/<repo...>/manifests/<ref> | /v2/<repo...>/blobs/<digest>
                repo, kind, ref = "/".join(parts[2:-2]), parts[-2], parts[-1]
                if repo in registry.protected:
                    scheme, user, password, realm = registry.protected[repo]
                    if scheme == "basic" and not self._basic(user, password):
                        challenge = f'Basic realm="{realm}/",service="ecr.amazonaws.com"'
                        return self._send(401, {"errors": [{"code": "DENIED"}]}, {"WWW-Authenticate": challenge})
                    bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    if scheme == "bearer" and registry.issued.get(bearer) != repo:
                        challenge = f'Bearer realm="{realm}/v2/token",service="registry",scope="repository:{repo}:pull"'
                        return self._send(401, {"errors": [{"code": "UNAUTHORIZED"}]}, {"WWW-Authenticate": challenge})
                    return self._serve(kind, repo, ref)
                if repo in registry.private and self.headers.get("Authorization") is None:
                    return self._send(401, {}, {"WWW-Authenticate": 'Basic realm="private"'})
                if self.headers.get("Authorization") != "Bearer anonymous-pull" and repo not in registry.private:
                    challenge = (
                        f'Bearer realm="http://{registry.host}/token",service="local",scope="repository:{repo}:pull"'
                    )
                    return self._send(401, {}, {"WWW-Authenticate": challenge})
                return self._serve(kind, repo, ref)

            def _serve(self, kind: str, repo: str, ref: str) -> None:
                if kind == "manifests" and f"{repo}:{ref}" in registry.images:
                    manifest = registry.images[f"{repo}:{ref}"]
                    return self._send(200, manifest, {"Content-Type": manifest["mediaType"]})
                if kind == "blobs" and ref in registry.blobs:
                    return self._send(200, registry.blobs[ref])
                return self._send(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})

        return Handler
