"""Every HTTP client pushpool makes shares one TLS context (pushpool.tls): httpx would load certifi's bundle again for
each client, about 28 ms of CPU, on every Prefect client ``Deps`` makes and every Coiled token's client."""

from __future__ import annotations

import ssl

import pytest
from pushpool.prefect_api.client import PrefectClient
from pushpool.providers.coiled.api import CoiledApi
from pushpool.providers.image_platform import ImagePlatforms
from pushpool.tls import default_context


@pytest.fixture
def contexts_made(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    default_context()  # made once per process, before the count starts
    made: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        made.append(args or kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return made


def test_clients_share_the_one_context(contexts_made: list[object]) -> None:
    clients = [PrefectClient("http://127.0.0.1:1/api") for _ in range(3)]
    clients += [CoiledApi("token", server="http://127.0.0.1:1") for _ in range(2)]
    with ImagePlatforms()._client():
        pass
    assert contexts_made == []
    for client in clients:
        client.close()


def test_it_is_httpx_s_default_trust() -> None:
    context = default_context()
    assert context is default_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded
