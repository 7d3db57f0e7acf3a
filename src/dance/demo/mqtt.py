"""Proposed `make demo` step: MQTT devices behind DANCE (architecture Example 4).

    from dance.demo.mqtt import run_mqtt
    good &= run_mqtt(out, now) == 0

A real Mosquitto (Debian package ``mosquitto``) on a free loopback port, with the ACL pattern
``pattern readwrite devices/%u/#``; ``dance.mqtt`` as the front; the testkit's signed zone on a DNS
server thread. Device ``sensor7._device.example.test`` publishes on its own topic (delivered),
forges another username and publishes on that device's topic (PUBACK 0x87, not delivered); the
same name with the wrong key, a name outside the allow-list and a first packet that is not a
CONNECT are refused and Mosquitto never sees them. Without Mosquitto the part says so and passes.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from dance import certs
from dance.mqtt.codec import Connect, PacketReader, encode_connect, encode_varint
from dance.tlsa import make_record

__all__ = ["run_mqtt"]

DEVICE = "sensor7._device.example.test"
OTHER = "sensor9._device.example.test"
OUTSIDER = "sensor7._device.evil.test"


def _write(d: Path, label: str, cert: Any, key: Any) -> tuple[str, str]:
    (d / f"{label}.pem").write_bytes(certs.certificate_pem(cert))
    certs.write_private_key(d / f"{label}.key", key)
    return str(d / f"{label}.pem"), str(d / f"{label}.key")


def _str(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _publish(topic: str, payload: bytes, mid: int) -> bytes:
    body = _str(topic) + mid.to_bytes(2, "big") + b"\x00" + payload  # QoS 1, MQTT 5
    return b"\x32" + encode_varint(len(body)) + body


def _subscribe(topic: str) -> bytes:
    body = b"\x00\x01" + b"\x00" + _str(topic) + b"\x01"  # MQTT 5, QoS 1
    return b"\x82" + encode_varint(len(body)) + body


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = PacketReader()
        self.queue: list[Any] = []

    async def packet(self, timeout: float = 10) -> Any:
        while not self.queue:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("closed")
            self.queue += self.framer.feed(data)
        return self.queue.pop(0)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


async def _open(
    port: int, context: ssl.SSLContext | None, username: str | None, password: bytes | None
) -> tuple[_Session, int]:
    """A session and its CONNACK reason code (raises when the connection is closed)."""
    kw: dict[str, Any] = {"ssl": context, "server_hostname": "localhost"} if context else {}
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **kw)
    s = _Session(reader, writer)
    await s.send(
        encode_connect(
            Connect(
                level=5,
                clean_start=True,
                keep_alive=30,
                client_id="demo",
                username=username,
                password=password,
            )
        )
    )
    connack = await s.packet()
    return s, connack.body[1]


def _start_broker(mosquitto: str, d: Path) -> tuple[subprocess.Popen[bytes], int]:
    from dance.mqtt.broker import acl_text, mosquitto_config
    from dance.testkit.servers import free_port

    port = free_port()
    (d / "acl").write_text(acl_text(["monitor"]))
    (d / "mosquitto.conf").write_text(mosquitto_config(port, d / "acl", d / "mosquitto.log"))
    (d / "mosquitto.log").touch()
    proc = subprocess.Popen(
        [mosquitto, "-c", str(d / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


def run_mqtt(out: TextIO, now: datetime.datetime | None = None) -> int:
    """Run the MQTT scenario, one line per case; 0 when every case went as expected."""
    from dance.auth import Authenticator
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.mqtt import MQTTProxyConfig, start_mqtt_proxy
    from dance.mqtt.client import device_context
    from dance.testkit import Hierarchy, ServerThread
    from dance.tls import BridgeError

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo: MQTT devices behind DANCE, `dance mqtt-proxy` + Mosquitto\n\n")
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if mosquitto is None:
        out.write("  (skipped: mosquitto is not installed; apt-get install mosquitto)\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="dance-demo-mqtt-") as tmp:
        d = Path(tmp)
        ca_key = certs.generate_key("ec-p256")
        ca = certs.new_ca(ca_key, "Demo server CA", now=now)
        s_key = certs.generate_key("ec-p256")
        s_cert = certs.issue_certificate(
            ca, ca_key, s_key.public_key(), dns_names=["localhost"], now=now, client_auth=False
        )
        (d / "ca.pem").write_bytes(certs.certificate_pem(ca))
        server = _write(d, "server", s_cert, s_key)
        dev_key = certs.generate_key("ec-p256")
        dev_cert = certs.self_signed(dev_key, DEVICE, now=now)
        device = _write(d, "device", dev_cert, dev_key)
        other_key = certs.generate_key("ec-p256")
        impostor = _write(d, "impostor", certs.self_signed(other_key, DEVICE, now=now), other_key)
        outsider = _write(d, "outsider", certs.self_signed(dev_key, OUTSIDER, now=now), dev_key)
        zones = Hierarchy("test.", ttl=60)
        zones.child("example.test.")
        devices = zones.child("_device.example.test.")
        devices.add("sensor7", "TLSA", make_record(dev_cert).to_text())
        zones.sign(algorithm=13, denial="nsec3")
        anchors = TrustAnchors.from_text(zones.export_trust_anchor())
        out.write(f"   {make_record(dev_cert).to_zone_line(DEVICE, 60)}\n")
        out.write("   mosquitto ACL: pattern readwrite devices/%u/#\n")
        out.write(
            "   mqtt-proxy: --allow ._device.example.test --broker <mosquitto on loopback>\n\n"
        )

        def ctx(files: tuple[str, str], name: str) -> ssl.SSLContext:
            return device_context(name=name, cert=files[0], key=files[1], cafile=str(d / "ca.pem"))

        broker, broker_port = _start_broker(mosquitto, d)

        def broker_connections() -> int:
            text = (d / "mosquitto.log").read_text(errors="replace")
            return len(re.findall("New connection from", text))

        try:
            with ServerThread(zones) as dns_server:

                async def scenario() -> bool:
                    async with TLSAResolver(
                        dns_server.address, anchors=anchors, recursion_desired=False
                    ) as resolver:
                        front, relay = await start_mqtt_proxy(
                            "127.0.0.1",
                            0,
                            config=MQTTProxyConfig(("127.0.0.1", broker_port)),
                            cert=server[0],
                            key=server[1],
                            authenticator=Authenticator(resolver, allow=["._device.example.test"]),
                        )
                        async with front:
                            return await _cases(
                                front.port,
                                broker_port,
                                relay,
                                ctx,
                                device,
                                impostor,
                                outsider,
                                broker_connections,
                                out,
                            )

                good = asyncio.run(scenario())
        except BridgeError as exc:
            out.write(f"  BAD this Python cannot reach its OpenSSL: {exc}\n")
            return 1
        finally:
            broker.terminate()
            broker.wait(10)
    return 0 if good else 1


async def _cases(
    port: int,
    broker_port: int,
    relay: Any,
    ctx: Any,
    device: Any,
    impostor: Any,
    outsider: Any,
    broker_connections: Any,
    out: TextIO,
) -> bool:
    ok = True

    def line(good: bool, label: str, verdict: str) -> None:
        nonlocal ok
        out.write(f"  {'ok ' if good else 'BAD'} {label:<44} {verdict}\n")
        ok &= good

    monitor, rc = await _open(broker_port, None, "monitor", None)
    await monitor.send(_subscribe("devices/#"))
    await monitor.packet()  # SUBACK
    try:
        s, rc = await _open(port, ctx(device, DEVICE), None, None)
        await s.send(_publish(f"devices/{DEVICE}/temp", b"21.5", 1))
        puback = await s.packet()
        got = await monitor.packet()
        good = rc == 0 and puback.body[2:3] in (b"", b"\x00") and b"21.5" in got.raw
        line(good, "sensor7 publishes on devices/sensor7/temp", "DELIVERED to the subscriber")
        s.close()

        s, rc = await _open(port, ctx(device, DEVICE), OTHER, b"stolen")
        await s.send(_publish(f"devices/{OTHER}/temp", b"forged", 2))
        puback = await s.packet()
        code = puback.body[2] if len(puback.body) > 2 else 0
        await s.send(_publish(f"devices/{DEVICE}/temp", b"22.0", 3))
        await s.packet()
        got = await monitor.packet()
        good = code == 0x87 and b"22.0" in got.raw
        line(
            good,
            "sensor7 as username sensor9, on sensor9's topic",
            f"PUBACK {code:#04x} (not authorized), not delivered",
        )
        s.close()
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        line(False, "sensor7 publishes", f"failed: {exc!r}")

    for label, files, name, first in (
        ("same name, wrong key", impostor, DEVICE, None),
        ("name outside the allow-list", outsider, OUTSIDER, None),
        ("first packet not a CONNECT", device, DEVICE, _publish("x", b"y", 1)),
    ):
        before = broker_connections()
        relayed = relay.stats.broker_connections
        refused = False
        try:
            if first is None:
                await _open(port, ctx(files, name), None, None)
            else:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx(files, name), server_hostname="localhost"
                )
                writer.write(first)
                refused = await asyncio.wait_for(reader.read(100), 10) == b""
                writer.close()
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError):
            refused = True
        await asyncio.sleep(0.2)
        reached = broker_connections() > before or relay.stats.broker_connections > relayed
        line(
            refused and not reached,
            label,
            f"REFUSED; broker contacted: {'yes' if reached else 'no'}",
        )
    monitor.close()
    out.write(f"      refusals by reason: {relay.stats.refused}\n")
    return ok
