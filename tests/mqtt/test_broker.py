"""paho-mqtt devices through the DANCE front to a real Mosquitto with ACL patterns on %u."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from dance.mqtt.client import device_context
from dance.mqtt.codec import Connect, Will, encode_connect, encode_varint
from tests.mqtt.conftest import MAX_REMAINING, MONITOR, Broker, Front, wait_for
from tests.tls.common import DEVICE, OTHER, OUTSIDE, Files, World

pytestmark = pytest.mark.integration

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5


class Client:
    """A paho-mqtt client recording what happens to it."""

    def __init__(self, protocol: int, client_id: str = "") -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.rc: Any = None
        self.messages: list[tuple[str, bytes]] = []
        self.acks: dict[int, Any] = {}
        self.subscribed = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *a: self.gone.set()
        self.c.on_message = lambda cl, u, m: self.messages.append((m.topic, m.payload))
        self.c.on_publish = lambda cl, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.c.on_subscribe = lambda *a: self.subscribed.set()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.rc = rc
        self.connected.set()

    def start(self, port: int, host: str = "localhost") -> Client:
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        return self

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        info = self.c.publish(topic, payload, qos=qos)
        return int(info.mid)


def ctx(world: World, files: Files, name: str) -> ssl.SSLContext:
    return device_context(name=name, cert=files.cert, key=files.key, cafile=world.ca)


def device(world: World, protocol: int, files: Any = None, name: str = DEVICE, **kw: Any) -> Client:
    client = Client(protocol, **kw)
    client.c.tls_set_context(ctx(world, files or world.device, name))
    return client


def monitor(broker: Broker, protocol: int) -> Client:
    m = Client(protocol)
    m.c.username_pw_set(MONITOR)
    m.start(broker.proc.port, "127.0.0.1")
    assert m.connected.wait(15) and not m.rc.is_failure
    m.c.subscribe("devices/#", qos=1)
    assert m.subscribed.wait(15)
    return m


@pytest.mark.parametrize("protocol", [V311, V5], ids=["3.1.1", "5"])
def test_device_publishes_on_its_topic_not_on_another(
    world: World, broker: Broker, front: Front, protocol: int
) -> None:
    mon = monitor(broker, protocol)
    dev = device(world, protocol).start(front.port)
    try:
        assert dev.connected.wait(15), broker.log()[-2000:]
        assert not dev.rc.is_failure
        foreign = dev.publish(f"devices/{OTHER}/x", b"forged")
        own = dev.publish(f"devices/{DEVICE}/x", b"reading 21.5")
        assert wait_for(lambda: (f"devices/{DEVICE}/x", b"reading 21.5") in mon.messages)
        assert wait_for(lambda: own in dev.acks and foreign in dev.acks)
        # the foreign message was sent first and never delivered
        assert all(topic != f"devices/{OTHER}/x" for topic, _ in mon.messages)
        if protocol == V5:  # MQTT 5 says why: PUBACK reason 0x87 Not authorized
            assert dev.acks[foreign].value == 0x87
            assert dev.acks[own].value == 0
    finally:
        dev.stop()
        mon.stop()
    assert f"as {DEVICE} (p{2 if protocol == V311 else 5}" in broker.log()


def test_forged_username_password_and_client_id_are_replaced(
    world: World, broker: Broker, front: Front
) -> None:
    before = front.proxy.stats.snapshot()
    mon = monitor(broker, V311)
    dev = device(world, V311, client_id=OTHER)
    dev.c.username_pw_set(OTHER, "hunter2")
    dev.start(front.port)
    try:
        assert dev.connected.wait(15) and not dev.rc.is_failure
        dev.publish(f"devices/{OTHER}/y", b"as other")
        dev.publish(f"devices/{DEVICE}/y", b"as itself")
        assert wait_for(lambda: (f"devices/{DEVICE}/y", b"as itself") in mon.messages)
        assert all(topic != f"devices/{OTHER}/y" for topic, _ in mon.messages)
    finally:
        dev.stop()
        mon.stop()
    log = broker.log()
    assert f"as {DEVICE} (p2, c1, k30, u'{DEVICE}')" in log
    assert f"u'{OTHER}'" not in log and f"as {OTHER}" not in log
    after = front.proxy.stats.snapshot()
    assert after["usernames_replaced"] == before["usernames_replaced"] + 1
    assert after["passwords_dropped"] == before["passwords_dropped"] + 1


@pytest.mark.parametrize(
    ("which", "name", "reason"),
    [("impostor", DEVICE, "no-match"), ("device", OUTSIDE, "not-allowed")],
    ids=["wrong-key", "outside-allow-list"],
)
def test_refused_identity_never_reaches_the_broker(
    world: World, broker: Broker, front: Front, which: str, name: str, reason: str
) -> None:
    seen = broker.connections()
    relayed = front.proxy.stats.broker_connections
    dev = device(world, V5, files=getattr(world, which), name=name)
    refused = front.server.stats.get(f"rejected_{reason}")
    try:
        dev.c.connect("localhost", front.port)  # TLS 1.3: the handshake ends before the verdict
    except (OSError, ssl.SSLError):
        pass
    else:
        dev.c.loop_start()
        assert dev.gone.wait(15)
    finally:
        dev.c.loop_stop()
    assert not dev.connected.is_set()
    assert wait_for(lambda: front.server.stats.get(f"rejected_{reason}") == refused + 1), (
        front.server.stats.snapshot()
    )
    assert front.proxy.stats.broker_connections == relayed
    assert broker.connections() == seen


def _tls(world: World, front: Front) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", front.port), timeout=15)
    return ctx(world, world.device, DEVICE).wrap_socket(sock, server_hostname="localhost")


def _until_closed(s: ssl.SSLSocket) -> bytes:
    got = b""
    try:
        while chunk := s.recv(4096):
            got += chunk
    except (OSError, ssl.SSLError):
        pass
    return got


def _connect(level: int = 4) -> bytes:
    return encode_connect(Connect(level=level, clean_start=True, keep_alive=30, client_id="x"))


def _body(level: int, flags: int, rest: bytes) -> bytes:
    b = b"\x00\x04MQTT" + bytes([level, flags]) + b"\x00\x1e" + (b"\x00" if level == 5 else b"")
    b += rest
    return b"\x10" + encode_varint(len(b)) + b


BAD_FIRST = {
    "not-connect": b"\x30\x05\x00\x01tab",
    "remaining-length-overlong": b"\x10\xff\xff\xff\xff\x01",
    "truncated": b"\x10\xff\xff",  # then the client half-closes
    "packet-too-large": b"\x10" + encode_varint(MAX_REMAINING + 1),
    "bad-protocol": _connect().replace(b"\x04MQTT\x04", b"\x04MQTT\x03"),
    "reserved-flag": _body(4, 0x03, b"\x00\x01x"),
    "bad-will": _body(4, 0x18, b"\x00\x01x"),
    "bad-utf8": _body(5, 0x02, b"\x00\x03a\x00b"),
}


@pytest.mark.parametrize("reason", sorted(BAD_FIRST))
def test_malformed_first_packet_is_refused_before_the_broker(
    world: World, broker: Broker, front: Front, reason: str
) -> None:
    seen = broker.connections()
    relayed = front.proxy.stats.broker_connections
    count = front.proxy.stats.refused.get(reason, 0)
    with _tls(world, front) as s:
        s.sendall(BAD_FIRST[reason])
        if reason == "truncated":
            s.shutdown(socket.SHUT_WR)
        assert _until_closed(s) == b""  # closed, nothing answered
    assert wait_for(lambda: front.proxy.stats.refused.get(reason, 0) == count + 1)
    assert front.proxy.stats.broker_connections == relayed
    assert broker.connections() == seen


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        (_connect(), "second-connect"),
        (b"\x30" + encode_varint(MAX_REMAINING + 1) + b"\x00\x01t", "packet-too-large"),
        (b"\x30\x80\x80\x80\x80\x01", "remaining-length-overlong"),
    ],
    ids=["second-connect", "oversized-publish", "overlong-length"],
)
def test_bad_later_packet_closes_the_session(
    world: World, broker: Broker, front: Front, after: bytes, reason: str
) -> None:
    count = front.proxy.stats.refused.get(reason, 0)
    with _tls(world, front) as s:
        s.sendall(_connect())
        connack = s.recv(4)
        assert connack[:1] == b"\x20" and connack[-1:] == b"\x00"  # CONNACK, accepted
        s.sendall(after)
        assert _until_closed(s) == b""
    assert wait_for(lambda: front.proxy.stats.refused.get(reason, 0) == count + 1)


def test_will_on_another_device_topic_is_not_published(
    world: World, broker: Broker, front: Front
) -> None:
    """A will is a publication the broker makes later on the device's behalf: the ACL applies."""
    mon = monitor(broker, V311)
    try:
        for topic in (f"devices/{OTHER}/will", f"devices/{DEVICE}/will"):
            will = Will(0, False, topic, b"gone")
            c = Connect(level=4, clean_start=True, keep_alive=30, client_id="w", will=will)
            s = _tls(world, front)
            s.sendall(encode_connect(c))
            connack = s.recv(4)
            s.close()  # no DISCONNECT: the broker publishes the will (if allowed)
            assert connack == b"\x20\x02\x00\x00"  # accepted either way
        own = (f"devices/{DEVICE}/will", b"gone")
        assert wait_for(lambda: own in mon.messages)  # sent after the foreign one
        assert all(t != f"devices/{OTHER}/will" for t, _ in mon.messages), mon.messages
    finally:
        mon.stop()


def test_the_broker_refuses_a_client_without_username(broker: Broker) -> None:
    """use_username_as_clientid: the front always sets one; a client without is refused."""
    anonymous = Client(V311, client_id="anyone")
    anonymous.start(broker.proc.port, "127.0.0.1")
    try:
        assert anonymous.connected.wait(15)
        assert anonymous.rc.is_failure
    finally:
        anonymous.c.loop_stop()


def test_a_device_that_vanishes_releases_its_broker_connection(
    world: World, broker: Broker, front: Front
) -> None:
    import struct

    closed = broker.log().count(f"Client {DEVICE} closed its connection")
    s = _tls(world, front)
    s.sendall(_connect())
    assert s.recv(4)[:1] == b"\x20"
    assert wait_for(lambda: front.server.connections >= 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # a TCP reset, no DISCONNECT
    assert wait_for(lambda: broker.log().count(f"Client {DEVICE} closed its connection") > closed)
    assert wait_for(lambda: front.server.connections == 0)
