"""The platforms an image offers, read from its registry over the Docker Registry HTTP API v2 (anonymous pull token
where the registry asks for one), so that a job whose image cannot run on its compute fails at once with a clear
message instead of a failed execution minutes later (Cloud Run runs ``linux/amd64`` only).

Answers are cached per image reference for a short time. A registry that cannot be read (private, unreachable, an
unknown answer) gives ``None``: the caller logs it and goes on — the check never blocks a job it cannot judge.

Example:
    >>> parse_reference("prefecthq/prefect:3-latest")
    ('registry-1.docker.io', 'prefecthq/prefect', '3-latest')
    >>> parse_reference("us-docker.pkg.dev/p/r/app@sha256:ab")
    ('us-docker.pkg.dev', 'p/r/app', 'sha256:ab')
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import httpx
from cachetools import TTLCache

log = logging.getLogger(__name__)

ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def parse_reference(image: str) -> tuple[str, str, str]:
    """``(registry host, repository, tag or digest)`` of an image reference, with Docker Hub's defaults."""
    name, reference = image, "latest"
    if "@" in name:
        name, reference = name.split("@", 1)
    elif ":" in name.rsplit("/", 1)[-1]:
        name, reference = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "registry-1.docker.io", name
        if "/" not in repository:
            repository = f"library/{repository}"
    if registry == "docker.io":
        registry = "registry-1.docker.io"
    return registry, repository, reference


class ImagePlatforms:
    """``platforms(image)``: the ``os/arch[/variant]`` set the image offers, or None when it cannot be read."""

    def __init__(
        self, *, ttl_seconds: float = 300.0, timeout: float = 5.0, client: Callable[[], httpx.Client] | None = None
    ) -> None:
        self._cache: TTLCache[str, frozenset[str] | None] = TTLCache(maxsize=512, ttl=ttl_seconds)
        self._lock = threading.Lock()
        self._client = client or (lambda: httpx.Client(timeout=timeout, follow_redirects=True))

    def platforms(self, image: str) -> frozenset[str] | None:
        with self._lock:
            if image in self._cache:
                return self._cache[image]
        try:
            found = self._read(image)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.info("the platforms of image %s cannot be read (%s): not checked", image, exc)
            found = None
        with self._lock:
            self._cache[image] = found
        return found

    def _read(self, image: str) -> frozenset[str] | None:
        registry, repository, reference = parse_reference(image)
        insecure = registry.split(":")[0] in ("127.0.0.1", "localhost")
        base = f"{'http' if insecure else 'https'}://{registry}/v2/{repository}"
        with self._client() as http:
            headers = {"Accept": ACCEPT}
            answer = http.get(f"{base}/manifests/{reference}", headers=headers)
            if answer.status_code == 401:
                token = _anonymous_token(http, answer.headers.get("www-authenticate", ""))
                if token is None:
                    log.info("the registry of %s wants credentials: its platforms are not checked", image)
                    return None
                headers["Authorization"] = f"Bearer {token}"
                answer = http.get(f"{base}/manifests/{reference}", headers=headers)
            if answer.status_code != 200:
                log.info("the registry answered %s for %s: its platforms are not checked", answer.status_code, image)
                return None
            manifest = answer.json()
            if "manifests" in manifest:  # an index / manifest list: one entry per platform
                return frozenset(
                    _platform(m["platform"])
                    for m in manifest["manifests"]
                    if isinstance(m.get("platform"), dict) and m["platform"].get("architecture") != "unknown"
                )
            config = http.get(f"{base}/blobs/{manifest['config']['digest']}", headers=headers)
            config.raise_for_status()
            return frozenset({_platform(config.json())})


def _platform(data: dict) -> str:
    found = f"{data.get('os', 'linux')}/{data['architecture']}"
    return f"{found}/{data['variant']}" if data.get("variant") else found


def _anonymous_token(http: httpx.Client, challenge: str) -> str | None:
    """An anonymous pull token from the registry's Bearer challenge (as ``docker pull`` gets one), or None."""
    if not challenge.lower().startswith("bearer "):
        return None
    fields = dict(_CHALLENGE.findall(challenge))
    if "realm" not in fields:
        return None
    params = {k: v for k, v in fields.items() if k in ("service", "scope")}
    answer = http.get(fields["realm"], params=params)
    if answer.status_code != 200:
        return None
    data = answer.json()
    token = data.get("token") or data.get("access_token")
    return str(token) if token else None


def missing_platform(offered: frozenset[str] | None, wanted: str) -> bool:
    """Whether ``offered`` (None: unknown) lacks ``wanted`` (``os/arch``; any variant of it counts)."""
    if offered is None:
        return False
    return not any(p == wanted or p.startswith(wanted + "/") for p in offered)
