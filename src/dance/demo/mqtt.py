"""`make demo` part I: MQTT devices behind DANCE (architecture Example 4).

    from dance.demo.mqtt import run_mqtt
    good &= run_mqtt(out, now) == 0

A real Mosquitto (Debian package ``mosquitto``) on a free loopback port, with the ACL pattern
``pattern readwrite devices/%u/#``; ``dance.mqtt`` as the front; the testkit's signed zone on a DNS
server thread. Device ``sensor7._device.example.test`` publishes on its own topic (delivered),
forges another username and publishes on that device's topic (PUBACK 0x87, not delivered); the
same name with the wrong key, a name outside the allow-list and a first packet that is not a
CONNECT are refused and Mosquitto never sees them. The device authenticates the front by DANE,
as `dance connect` does (`dance.tls.dane.server_policy`, policy ``dane``, no CA): the front's key
is published at ``_PORT._tcp.mqtt.example.test`` once it listens, and a server with another key
on the path (traffic redirected) is refused by the device before any MQTT byte. Without
Mosquitto the part says so and passes.
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
from dance.demo.files import write_pair
from dance.mqtt.codec import Connect, PacketReader, encode_connect, encode_varint
from dance.tlsa import make_record

__all__ = ["run_mqtt"]

DEVICE = "sensor7._device.example.test"
OTHER = "sensor9._device.example.test"
OUTSIDER = "sensor7._device.evil.test"
FRONT = "mqtt.example.test"  # the front's name: its key at _PORT._tcp.mqtt.example.test


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


class _Device:
    """How a device reaches the front: its TLS context (PKIX off) and, per connection, the
    front's TLSA records looked up and checked as `dance connect` does (policy ``dane``)."""

    def __init__(self, resolver: Any, port: int, make_context: Any) -> None:
        self.resolver, self.port, self.make_context = resolver, port, make_context

    async def connect(
        self, files: tuple[str, str], name: str, port: int | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TLS connection to ``port`` (default: the front's) presenting ``files`` as ``name``,
        the server checked against the front's records; raises `ServerRejected` (nothing sent)
        when the server is not the one published."""
        from dance.tls import connect
        from dance.tls.dane import server_policy

        check, pkix = await server_policy(self.resolver, FRONT, self.port, policy="dane")
        assert check is not None and not pkix
        return await connect(
            "127.0.0.1", port or self.port, context=self.make_context(files, name),
            server_hostname=FRONT, server_check=check,
        )  # fmt: skip


async def _open(
    port: int,
    device: _Device | None,
    username: str | None,
    password: bytes | None,
    files: tuple[str, str] | None = None,
    name: str = "",
) -> tuple[_Session, int]:
    """A session and its CONNACK reason code (raises when the connection is closed); through
    the front as ``device`` presenting ``files`` as ``name``, or straight to the broker."""
    if device is not None and files is not None:
        reader, writer = await device.connect(files, name)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
    from dance.testkit import Hierarchy, ServerThread
    from dance.tls import BridgeError, client_context

    now = now or datetime.datetime.now(datetime.UTC)
    out.write("\ndance demo, part I: MQTT devices behind DANCE, `dance mqtt-proxy` + Mosquitto\n\n")
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if mosquitto is None:
        out.write("  (skipped: mosquitto is not installed; apt-get install mosquitto)\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="dance-demo-mqtt-") as tmp:
        d = Path(tmp)
        s_key = certs.generate_key("ec-p256")
        s_cert = certs.self_signed(s_key, FRONT, now=now)  # no CA: its key is in DNS
        server = write_pair(d, "server", s_cert, s_key)
        mitm_key = certs.generate_key("ec-p256")
        mitm = write_pair(d, "mitm", certs.self_signed(mitm_key, FRONT, now=now), mitm_key)
        dev_key = certs.generate_key("ec-p256")
        dev_cert = certs.self_signed(dev_key, DEVICE, now=now)
        device = write_pair(d, "device", dev_cert, dev_key)
        other_key = certs.generate_key("ec-p256")
        impostor = write_pair(
            d, "impostor", certs.self_signed(other_key, DEVICE, now=now), other_key
        )
        outsider = write_pair(d, "outsider", certs.self_signed(dev_key, OUTSIDER, now=now), dev_key)
        zones = Hierarchy("test.", ttl=60)
        example = zones.child("example.test.")
        devices = zones.child("_device.example.test.")
        devices.add("sensor7", "TLSA", make_record(dev_cert).to_text())
        zones.sign(algorithm=13, denial="nsec3")
        anchors = TrustAnchors.from_text(zones.export_trust_anchor())
        out.write(f"   {make_record(dev_cert).to_zone_line(DEVICE, 60)}\n")
        out.write("   mosquitto ACL: pattern readwrite devices/%u/#\n")
        out.write("   mqtt-proxy: --allow ._device.example.test --broker <mosquitto on loopback>\n")

        def ctx(files: tuple[str, str], name: str) -> ssl.SSLContext:
            # PKIX off: the front is authenticated by its TLSA records (server_check)
            return client_context(name=name, cert=files[0], key=files[1], verify_server=False)

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
                            # the front listens: its key is published at _PORT._tcp.FRONT
                            record = make_record(s_cert)
                            example.add(f"_{front.port}._tcp.mqtt", "TLSA", record.to_text())
                            zones.sign(algorithm=13, denial="nsec3")
                            owner = f"_{front.port}._tcp.{FRONT}"
                            out.write(f"   {record.to_zone_line(owner, 60)[:92]}...\n")
                            out.write(
                                "   devices authenticate the front by DANE "
                                "(as `dance connect --server-auth dane`), no CA\n\n"
                            )
                            dev = _Device(resolver, front.port, ctx)
                            ok = await _cases(
                                dev, broker_port, relay, device, impostor, outsider,
                                broker_connections, out,
                            )  # fmt: skip
                            return ok & await _mitm(dev, device, mitm, out)

                good = asyncio.run(scenario())
        except BridgeError as exc:
            out.write(f"  BAD this Python cannot reach its OpenSSL: {exc}\n")
            return 1
        finally:
            broker.terminate()
            broker.wait(10)
    return 0 if good else 1


def _line(out: TextIO, good: bool, label: str, verdict: str) -> bool:
    out.write(f"  {'ok ' if good else 'BAD'} {label:<44} {verdict}\n")
    return good


async def _mitm(dev: _Device, device: tuple[str, str], mitm: tuple[str, str], out: TextIO) -> bool:
    """A TLS server with another key where the device expects the front (traffic redirected):
    the device refuses it after the handshake and sends it nothing."""
    from dance.tls import ServerRejected

    received = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.extend(await asyncio.wait_for(reader.read(65536), 10))
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*mitm)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    verdict, refused = "", False
    try:
        async with server:
            try:
                _, writer = await dev.connect(device, DEVICE, port)
                writer.write(
                    encode_connect(
                        Connect(level=5, clean_start=True, keep_alive=30, client_id="demo")
                    )
                )
                writer.close()
                verdict = "connected: the device would have sent its CONNECT"
            except ServerRejected as exc:
                refused = True
                verdict = f"REFUSED by the device: {str(exc).split(' (')[0]}"
            await asyncio.sleep(0.1)
    except (OSError, ssl.SSLError) as exc:
        verdict = f"failed: {exc!r}"
    verdict += f"; MQTT bytes sent: {len(received)}"
    return _line(out, refused and not received, "a server with another key on the path", verdict)


async def _cases(
    dev: _Device,
    broker_port: int,
    relay: Any,
    device: Any,
    impostor: Any,
    outsider: Any,
    broker_connections: Any,
    out: TextIO,
) -> bool:
    from dance.tls import ServerRejected

    ok = True

    def line(good: bool, label: str, verdict: str) -> None:
        nonlocal ok
        ok &= _line(out, good, label, verdict)

    monitor, rc = await _open(broker_port, None, "monitor", None)
    await monitor.send(_subscribe("devices/#"))
    await monitor.packet()  # SUBACK
    try:
        s, rc = await _open(0, dev, None, None, device, DEVICE)
        await s.send(_publish(f"devices/{DEVICE}/temp", b"21.5", 1))
        puback = await s.packet()
        got = await monitor.packet()
        good = rc == 0 and puback.body[2:3] in (b"", b"\x00") and b"21.5" in got.raw
        line(good, "sensor7 publishes on devices/sensor7/temp", "DELIVERED to the subscriber")
        s.close()

        s, rc = await _open(0, dev, OTHER, b"stolen", device, DEVICE)
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
                await _open(0, dev, None, None, files, name)
            else:
                reader, writer = await dev.connect(files, name)
                writer.write(first)
                refused = await asyncio.wait_for(reader.read(100), 10) == b""
                writer.close()
        except ServerRejected as exc:  # the device refused the front: not what this case shows
            out.write(f"      the front was not authenticated: {exc}\n")
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
