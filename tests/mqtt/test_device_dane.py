"""The MQTT device helper authenticates the broker front by DANE: paho-mqtt devices through
`dance mqtt-proxy` (its key published at _PORT._tcp.FRONT) to a real Mosquitto. A refused front
never receives an MQTT byte: the front counts no CONNECT."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from dance.mqtt.client import device_context
from dance.testkit import Fault
from dance.tls import DanceSSLSocket, ServerRejected, client_context, wrap_socket
from dance.tls.dane import ServerNotAuthenticated, blocking_server_policy, dane_check
from dance.tlsa import make_record
from tests.mqtt.conftest import Broker, Front, wait_for
from tests.mqtt.test_broker import V5, Client, monitor
from tests.tls.common import DEVICE, World, resolver

pytestmark = pytest.mark.integration

FRONT_ZONE = "front.example.test."
FRONT = "mqtt.front.example.test"  # the front's DNS name: TLSA at _PORT._tcp.FRONT


@pytest.fixture(scope="module")
def front_zone(world: World) -> Iterator[str]:
    """A signed zone of its own for the front's records (its DS can be withdrawn: insecure)."""
    if world.zones.get(FRONT_ZONE) is None:
        world.zones.child(FRONT_ZONE)
        world.resign()
    yield FRONT_ZONE


def _cert(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _publish(world: World, port: int, *records: str) -> str:
    zone = world.zones.get(FRONT_ZONE)
    owner = f"_{port}._tcp.{FRONT}."
    zone.remove(owner, "TLSA")
    for record in records:
        zone.add(owner, "TLSA", record)
    world.resign()
    return owner


def _device(world: World, policy: str, **kw: object) -> Client:
    client = Client(V5)
    client.c.tls_set_context(
        device_context(
            name=DEVICE, cert=world.device.cert, key=world.device.key, server_auth=policy,
            resolver=lambda: resolver(world), server_name=FRONT, **kw,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    return client


def _front_seen(front: Front) -> tuple[int, int, int]:
    s = front.proxy.stats
    return s.connects, s.broker_connections, s.refused.get("no-connect", 0)


def _refused_before_mqtt(
    world: World, broker: Broker, front: Front, policy: str, match: str, **kw: object
) -> None:
    """paho's connect raises; the front saw no CONNECT and opened no broker connection."""
    connects, relayed, _ = _front_seen(front)
    seen = broker.connections()
    dev = _device(world, policy, **kw)
    with pytest.raises(ServerRejected, match=match):
        dev.c.connect("localhost", front.port, keepalive=30)
    assert not dev.connected.is_set()
    s = front.proxy.stats
    assert (s.connects, s.broker_connections) == (connects, relayed)
    assert broker.connections() == seen


def test_published_key_is_accepted_by_dane_without_any_ca(
    world: World, broker: Broker, front: Front, front_zone: str
) -> None:
    _publish(world, front.port, make_record(_cert(world.server.cert), 3, 1, 1).to_text())
    mon = monitor(broker, V5)
    dev = _device(world, "dane").start(front.port, "localhost")
    try:
        assert dev.connected.wait(15) and not dev.rc.is_failure
        dev.publish(f"devices/{DEVICE}/dane", b"front authenticated by DNS")
        own = (f"devices/{DEVICE}/dane", b"front authenticated by DNS")
        assert wait_for(lambda: own in mon.messages)
    finally:
        dev.stop()
        mon.stop()
    # the same by DANE-or-PKIX, whose CA file would refuse nothing here: DANE decides first
    wrong_ca = str(world.dir / "other.pem")  # a self-signed device certificate, not the front's CA
    dev = _device(world, "dane-or-pkix", cafile=wrong_ca).start(front.port, "localhost")
    try:
        assert dev.connected.wait(15) and not dev.rc.is_failure
    finally:
        dev.stop()


def test_wrong_published_key_is_refused_before_any_mqtt_byte(
    world: World, broker: Broker, front: Front, front_zone: str
) -> None:
    other = make_record(_cert(world.other.cert), 3, 1, 1).to_text()
    _publish(world, front.port, other)
    _, _, closed = _front_seen(front)
    # no fallback to the CA when secure records exist and do not match
    for policy in ("dane", "dane-or-pkix"):
        _refused_before_mqtt(world, broker, front, policy, "no-match", cafile=world.ca)
    # the front saw both devices hang up without a CONNECT
    assert wait_for(lambda: front.proxy.stats.refused.get("no-connect", 0) >= closed + 2)


def test_absent_insecure_and_bogus_answers(
    world: World, broker: Broker, front: Front, front_zone: str
) -> None:
    good = make_record(_cert(world.server.cert), 3, 1, 1).to_text()
    _publish(world, front.port)  # provably no record
    _refused_before_mqtt(world, broker, front, "dane", "no usable TLSA records.*secure-absent")
    owner = _publish(world, front.port, good)
    with world.zones.inject(Fault("missing-ds", FRONT_ZONE)):  # an insecure zone
        _refused_before_mqtt(world, broker, front, "dane", "insecure")
        # dane-or-pkix: provably no DANE, the CA decides: the front's CA names localhost
        dev = _device(world, "dane-or-pkix", cafile=world.ca).start(front.port, "localhost")
        try:
            assert dev.connected.wait(15) and not dev.rc.is_failure
        finally:
            dev.stop()
    with world.zones.inject(Fault("bad-signature", owner)):  # bogus: never a fallback
        for policy in ("dane", "dane-or-pkix"):
            _refused_before_mqtt(world, broker, front, policy, "bogus", cafile=world.ca)


def test_pkix_fallback_still_checks_the_certificate(
    world: World, broker: Broker, front: Front, front_zone: str
) -> None:
    """Insecure zone, dane-or-pkix, a CA that did not issue the front's certificate: refused by
    the TLS handshake itself (PKIX), nothing sent."""
    _publish(world, front.port, make_record(_cert(world.server.cert), 3, 1, 1).to_text())
    connects, relayed, _ = _front_seen(front)
    with world.zones.inject(Fault("missing-ds", FRONT_ZONE)):
        dev = _device(world, "dane-or-pkix", cafile=str(world.dir / "other.pem"))
        with pytest.raises(ssl.SSLCertVerificationError):
            dev.c.connect("localhost", front.port, keepalive=30)
    assert (front.proxy.stats.connects, front.proxy.stats.broker_connections) == (
        connects,
        relayed,
    )


def test_blocking_wrap_socket_helper(world: World, front: Front, front_zone: str) -> None:
    """`dance.tls.wrap_socket` with an explicit DANE check, and a context whose server policy
    refuses: the public blocking API without paho-mqtt."""
    server = make_record(_cert(world.server.cert), 3, 1, 1).to_wire()
    wrong = bytes.fromhex("030101" + "00" * 32)
    plain = client_context(
        name=DEVICE, cert=world.device.cert, key=world.device.key, verify_server=False
    )
    with socket.create_connection(("127.0.0.1", front.port), timeout=15) as raw:
        tls = wrap_socket(raw, plain, server_hostname=FRONT,
                          server_check=dane_check(FRONT, front.port, [server]))  # fmt: skip
        assert tls.version() == "TLSv1.3"
        assert isinstance(tls, DanceSSLSocket) and tls.dance_state is not None
        assert tls.dance_state.sent_name == DEVICE
        tls.close()
    with (
        socket.create_connection(("127.0.0.1", front.port), timeout=15) as raw,
        pytest.raises(ServerRejected, match="no-match"),
    ):
        wrap_socket(raw, plain, server_hostname=FRONT,
                    server_check=dane_check(FRONT, front.port, [wrong]))  # fmt: skip
    # a server policy refusing before the handshake: ServerNotAuthenticated, a ServerRejected
    _publish(world, front.port)
    policy = blocking_server_policy(lambda: resolver(world), policy="dane")
    ctx = client_context(name=DEVICE, cert=world.device.cert, key=world.device.key,
                         server_policy=policy)  # fmt: skip
    with (
        socket.create_connection(("127.0.0.1", front.port), timeout=15) as raw,
        pytest.raises(ServerNotAuthenticated),
    ):
        wrap_socket(raw, ctx, server_hostname=FRONT)
    with pytest.raises(ValueError, match="verifies the server"):
        client_context(name=DEVICE, cert=world.device.cert, key=world.device.key,
                       verify_server=False, server_policy=policy)  # fmt: skip


def test_device_context_options() -> None:
    with pytest.raises(ValueError, match="needs a resolver"):
        device_context(name=DEVICE, cert="x", key="y", server_auth="dane")
    with pytest.raises(ValueError, match="server_auth is one of"):
        device_context(name=DEVICE, cert="x", key="y", server_auth="none")
