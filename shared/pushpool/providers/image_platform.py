"""The platforms an image offers, read from its registry over the Docker Registry HTTP API v2, so that a job whose
image cannot run on its compute fails at once with a clear message instead of a failed execution minutes later (Cloud
Run runs ``linux/amd64`` only; an ECS task its ``runtimePlatform``).

A registry is read as ``docker pull`` reads it: anonymously first; on a ``401`` with a ``Basic`` challenge with the
credentials of that registry, on a ``Bearer`` challenge with a token from the challenge's realm (asked with those
credentials when there are any, else anonymously, as Docker Hub gives anonymous pull tokens). The credentials come
from a hook, ``credentials(host) -> (user, password) | None``, that each backend gives for its own registries only
(ECS: an ECR token for ``<account>.dkr.ecr.<region>.amazonaws.com``; Cloud Run: a Google access token for
``*-docker.pkg.dev`` and ``gcr.io``): no other host ever receives them, nor a realm on another host or over plain
HTTP.

Answers are cached per image reference for a short time. A registry that cannot be read (private without usable
credentials, credentials refused, unreachable, an unknown answer) gives ``None``: it is logged — never with a
credential — and the job goes on: the check never blocks a job it cannot judge.

Example:
    >>> parse_reference("prefecthq/prefect:3-latest")
    ('registry-1.docker.io', 'prefecthq/prefect', '3-latest')
    >>> parse_reference("us-docker.pkg.dev/p/r/app@sha256:ab")
    ('us-docker.pkg.dev', 'p/r/app', 'sha256:ab')
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from cachetools import TTLCache

from pushpool.tls import default_context

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
_LOCAL = ("127.0.0.1", "localhost")

Credentials = Callable[[str], "tuple[str, str] | None"]
"""``credentials(registry host)``: ``(user, password)`` for a registry the caller vouches for, else None."""


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
    """``platforms(image)``: the ``os/arch[/variant]`` set the image offers, or None when it cannot be read.

    ``credentials`` is the hook that gives the credentials of a registry host (None: anonymous only); a call may give
    its own (the job's identity). ``client`` makes the HTTP client (tests route registry hosts to 127.0.0.1 with it).
    """

    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        timeout: float = 5.0,
        client: Callable[[], httpx.Client] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self._cache: TTLCache[str, frozenset[str] | None] = TTLCache(maxsize=512, ttl=ttl_seconds)
        self._lock = threading.Lock()
        self._client = client or (
            lambda: httpx.Client(timeout=timeout, follow_redirects=True, verify=default_context())
        )
        self._credentials = credentials

    def platforms(self, image: str, *, credentials: Credentials | None = None) -> frozenset[str] | None:
        with self._lock:
            if image in self._cache:
                return self._cache[image]
        try:
            found = self._read(image, credentials or self._credentials)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.info("the platforms of image %s cannot be read (%s): not checked", image, exc)
            found = None
        with self._lock:
            self._cache[image] = found
        return found

    def _read(self, image: str, credentials: Credentials | None) -> frozenset[str] | None:
        registry, repository, reference = parse_reference(image)
        insecure = registry.split(":")[0] in _LOCAL
        base = f"{'http' if insecure else 'https'}://{registry}/v2/{repository}"
        with self._client() as http:
            headers = {"Accept": ACCEPT}
            answer = http.get(f"{base}/manifests/{reference}", headers=headers)
            if answer.status_code == 401:
                authorization = _authorization(
                    http, registry, answer.headers.get("www-authenticate", ""), credentials, image
                )
                if authorization is None:
                    log.info("the registry of %s wants credentials: its platforms are not checked", image)
                    return None
                headers["Authorization"] = authorization
                answer = http.get(f"{base}/manifests/{reference}", headers=headers)
                if answer.status_code in (401, 403):
                    log.info(
                        "the registry of %s refused the credentials (%s): its platforms are not checked",
                        image,
                        answer.status_code,
                    )
                    return None
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
            # A blob may redirect to storage (S3, GCS): httpx drops the Authorization header on another origin.
            config = http.get(f"{base}/blobs/{manifest['config']['digest']}", headers=headers)
            config.raise_for_status()
            return frozenset({_platform(config.json())})


def _platform(data: dict) -> str:
    found = f"{data.get('os', 'linux')}/{data['architecture']}"
    return f"{found}/{data['variant']}" if data.get("variant") else found


def _authorization(
    http: httpx.Client, registry: str, challenge: str, credentials: Credentials | None, image: str
) -> str | None:
    """The ``Authorization`` header answering the registry's challenge, or None (no way in: not judged).

    ``Basic``: the registry's own credentials. ``Bearer``: a token from the realm, asked with the registry's
    credentials when the hook has any and the realm is on the registry's own host over HTTPS (or local), else
    anonymously."""
    scheme = challenge.split(" ", 1)[0].lower()
    if scheme == "basic":
        found = _credentials_of(credentials, registry, image)
        return None if found is None else _basic(found)
    if scheme != "bearer":
        return None
    fields = dict(_CHALLENGE.findall(challenge))
    if "realm" not in fields:
        return None
    realm = urlsplit(fields["realm"])
    found = None
    # Credentials only to the registry's own realm (Artifact Registry's and gcr.io's are on the registry's host), over
    # HTTPS: a realm elsewhere could relay them, or hand a token for another repository to a foreign registry.
    if realm.netloc == registry and (realm.scheme == "https" or (realm.hostname or "") in _LOCAL):
        found = _credentials_of(credentials, registry, image)
    params = {k: v for k, v in fields.items() if k in ("service", "scope")}
    headers = {"Authorization": _basic(found)} if found else {}
    answer = http.get(fields["realm"], params=params, headers=headers)
    if answer.status_code != 200:
        if found:
            log.info("the token service of %s refused the credentials (%s)", image, answer.status_code)
        return None
    data = answer.json()
    token = data.get("token") or data.get("access_token")
    return f"Bearer {token}" if token else None


def _credentials_of(credentials: Credentials | None, host: str, image: str) -> tuple[str, str] | None:
    """What the hook gives for ``host``; a hook that fails (no credentials, access denied) is logged — its error type
    and message, which name no secret — and the registry is read anonymously."""
    if credentials is None:
        return None
    try:
        return credentials(host)
    except Exception as exc:  # noqa: BLE001 - whatever the SDK raised, the check must never block the job
        log.info(
            "no credentials for the registry %s of image %s (%s: %s): read anonymously",
            host,
            image,
            type(exc).__name__,
            _one_line(exc),
        )
        return None


def _basic(found: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{found[0]}:{found[1]}".encode()).decode()


def _one_line(exc: BaseException) -> str:
    one_line = getattr(exc, "one_line", None)
    text = one_line() if callable(one_line) else str(exc)
    return " ".join(str(text).split())[:300]


def missing_platform(offered: frozenset[str] | None, wanted: str) -> bool:
    """Whether ``offered`` (None: unknown) lacks ``wanted`` (``os/arch``; any variant of it counts)."""
    if offered is None:
        return False
    return not any(p == wanted or p.startswith(wanted + "/") for p in offered)
