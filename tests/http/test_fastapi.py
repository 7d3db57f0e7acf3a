"""The FastAPI dependency yielding the Identity (alone, and behind the ASGI middleware)."""

# No `from __future__ import annotations`: FastAPI must resolve the Annotated dependencies,
# which refer to local variables.
from typing import Annotated

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from dance.http.asgi import DanceMiddleware
from dance.http.fastapi import DanceIdentity
from dance.identity import Identity
from tests.http.common import (
    DEVICE,
    USER,
    Identities,
    b64,
    make_http_auth,
    make_identities,
    rfc9440,
)
from tests.http.test_middleware import PROXY, SETTINGS


@pytest.fixture(scope="module")
def ids() -> Identities:
    return make_identities()


def test_fastapi_dependency(ids: Identities) -> None:
    http_auth, _ = make_http_auth(ids)
    standalone = FastAPI()
    dependency = DanceIdentity(http_auth, SETTINGS)

    @standalone.post("/reading")
    async def reading(identity: Annotated[Identity, Depends(dependency)]) -> dict[str, str]:
        return {"client": identity.identity}

    with TestClient(standalone, client=(PROXY, 5000)) as client:
        r = client.post("/reading", headers={"Client-Cert": b64(ids.device)})
        assert r.status_code == 200 and r.json() == {"client": DEVICE}
        r = client.post(
            "/reading", headers={"Client-Cert": b64(ids.alice)}, json={"dane_clientid": USER}
        )
        assert r.json() == {"client": "alice@example.test"}
        r = client.post("/reading", headers={"Client-Cert": b64(ids.impostor)})
        assert r.status_code == 403
        assert r.json() == {"detail": {"error": "forbidden", "code": "not-authenticated"}}
    with TestClient(standalone, client=("192.0.2.1", 5000)) as client:
        r = client.post("/reading", headers={"Client-Cert": b64(ids.device)})
        assert r.status_code == 403 and r.json()["detail"]["code"] == "no-client-certificate"

    # With the middleware: the dependency yields the identity the middleware established.
    with_mw = FastAPI()
    with_mw.add_middleware(DanceMiddleware, http_auth=http_auth, settings=SETTINGS)
    only_stored = DanceIdentity()

    @with_mw.get("/whoami")
    async def whoami(identity: Annotated[Identity, Depends(only_stored)]) -> dict[str, str]:
        return {"client": identity.identity}

    with TestClient(with_mw, client=(PROXY, 5000)) as client:
        r = client.get("/whoami", headers={"Client-Cert": rfc9440(ids.issued)})
        assert r.json() == {"client": "sensor9._device.example.test"}
        assert client.get("/whoami").status_code == 403
