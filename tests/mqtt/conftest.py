"""A real Mosquitto on loopback behind a DANCE MQTT front running in a thread, and the signed
test zone of tests/tls (DEVICE, OTHER, their keys, an impostor)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from dance.auth import Authenticator
from dance.mqtt import MQTTProxy, MQTTProxyConfig, start_mqtt_proxy
from dance.mqtt.broker import acl_text, mosquitto_config
from dance.testkit.frontends import wait_port
from dance.testkit.servers import Proc, free_port
from dance.tls import DanceServer
from tests.conftest import require_binary
from tests.threads import serve_in_thread
from tests.tls.common import ALLOW, World, make_world, resolver

MONITOR = "monitor"  # a back-end application on loopback, reads devices/#
MAX_REMAINING = 64 * 1024


@dataclass
class Broker:
    proc: Proc

    def log(self) -> str:
        return self.proc.log.read_text(errors="replace")

    def connections(self) -> int:
        return len(re.findall(r"New connection from", self.log()))


@dataclass
class Front:
    server: DanceServer
    proxy: MQTTProxy
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("mqtt-world"))


@pytest.fixture(scope="package")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    mosquitto = require_binary("mosquitto")
    d = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    (d / "acl").write_text(acl_text([MONITOR]))
    (d / "mosquitto.conf").write_text(mosquitto_config(port, d / "acl", d / "mosquitto.log"))
    (d / "mosquitto.log").touch()
    with (d / "stdout").open("wb") as out:
        process = subprocess.Popen(
            [mosquitto, "-c", str(d / "mosquitto.conf")], stdout=out, stderr=subprocess.STDOUT
        )
    proc = Proc(process, port, d / "mosquitto.log")
    wait_port(proc)
    try:
        yield Broker(proc)
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def front(world: World, broker: Broker) -> Iterator[Front]:
    """The DANCE front on a loop in its own thread (paho-mqtt clients are blocking)."""

    @contextlib.asynccontextmanager
    async def serve(loop: asyncio.AbstractEventLoop) -> AsyncIterator[Front]:
        async with resolver(world) as res:
            server, proxy = await start_mqtt_proxy(
                "127.0.0.1",
                0,
                config=MQTTProxyConfig(
                    ("127.0.0.1", broker.proc.port),
                    max_remaining=MAX_REMAINING,
                    connect_timeout=5.0,
                ),
                cert=world.server.cert,
                key=world.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
            )
            async with server:
                yield Front(server, proxy, loop)

    yield from serve_in_thread(serve, "the MQTT front")


def wait_for(predicate: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
