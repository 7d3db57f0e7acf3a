"""A real FreeRADIUS on loopback (`dance.testkit.freeradius`, config in a temp dir) behind a DANCE
RadSec front running in a thread, and the signed test zone of tests/tls (DEVICE, OTHER, their
keys, an impostor)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dance.auth import Authenticator
from dance.radius import RadsecProxy, RadsecProxyConfig, start_radsec_proxy
from dance.testkit.freeradius import RadiusBackend as FreeRadius
from dance.tls import DanceServer
from tests.threads import serve_in_thread
from tests.tls.common import DEVICE, OTHER, World, make_world, resolver

LOOPBACK_SECRET = "loopback-secret-for-tests"
USERS = {"bob": "hunter2", "alice": "correct horse battery"}
# the front allows DEVICE and OTHER's sibling names, not OTHER itself: OTHER is "outside"
FRONT_ALLOW = [DEVICE, "sensor8._device.example.test"]


@dataclass
class Front:
    server: DanceServer
    proxy: RadsecProxy
    loop: asyncio.AbstractEventLoop
    auth: Authenticator = field(repr=False)

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("radius-world"))


@pytest.fixture(scope="package")
def freeradius(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreeRadius]:
    backend = FreeRadius(
        tmp_path_factory.mktemp("freeradius"), secret=LOOPBACK_SECRET, users=USERS,
        allowed_suffix="._device.example.test",
    )  # fmt: skip
    with backend:
        yield backend


def run_front(
    world: World, config: RadsecProxyConfig, allow: list[str], **limits: Any
) -> Iterator[Front]:
    """A DANCE RadSec front on a loop in its own thread (blocking clients such as radclient can
    run beside it)."""

    @contextlib.asynccontextmanager
    async def serve(loop: asyncio.AbstractEventLoop) -> AsyncIterator[Front]:
        async with resolver(world) as res:
            auth = Authenticator(res, allow=allow)
            server, proxy = await start_radsec_proxy(
                "127.0.0.1",
                0,
                config=config,
                cert=world.server.cert,
                key=world.server.key,
                authenticator=auth,
                **limits,
            )
            async with server:
                yield Front(server, proxy, loop, auth)

    yield from serve_in_thread(serve, "the RadSec front")


@pytest.fixture(scope="package")
def front(world: World, freeradius: FreeRadius) -> Iterator[Front]:
    config = RadsecProxyConfig(
        ("127.0.0.1", freeradius.port), backend_secret=LOOPBACK_SECRET.encode(), backend_timeout=5.0
    )
    yield from run_front(world, config, FRONT_ALLOW, san_fallback=True)


def wait_for(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def identities(text: str) -> list[str]:
    return re.findall(r'DANCE-Client-Name = "([^"]*)"', text)


__all__ = ["DEVICE", "OTHER"]
