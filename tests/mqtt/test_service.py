"""`dance mqtt-proxy` as a service, as a real process in front of a real Mosquitto: SIGTERM
drains established MQTT sessions, SIGHUP reloads the certificate, key, allow-list and trust
anchors (a bad new configuration is refused and the old one kept), --workers 2 shares the port,
every decision is one access-log line, each worker serves its metrics."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from dance import certs
from dance.mqtt.codec import Connect, encode_connect
from dance.testkit import Hierarchy
from dance.testkit.servers import free_port_pair
from dance.tls import client_context
from tests.mqtt.conftest import Broker
from tests.pki import key
from tests.processes import counter_sums, dance_process, metrics_page
from tests.tls.common import DEVICE, NOW, OTHER, Files, World

pytestmark = pytest.mark.integration

PINGREQ, PINGRESP = b"\xc0\x00", b"\xd0\x00"


class Service:
    """A `dance mqtt-proxy` process; stdout lines are read by a thread."""

    def __init__(self, world: World, broker: Broker, *extra: str) -> None:
        self.proc = dance_process(
            "mqtt-proxy", "--listen", "127.0.0.1:0", "--broker", f"127.0.0.1:{broker.proc.port}",
            "--server", f"{world.dns[0]}:{world.dns[1]}", *extra,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.line("listening on")
        self.port = int(first.split("listening on 127.0.0.1:")[1].split(",")[0])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.lines.put(text)
        self.lines.put("")

    def line(self, containing: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{containing!r} not seen: {self.seen}") from None
            self.seen.append(text)
            assert text, f"the service ended: {self.seen}"
            if containing in text:
                return text

    def signal(self, number: int, expect: str) -> str:
        self.proc.send_signal(number)
        return self.line(expect)

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        for bad in ("Traceback", "Task was destroyed", "never retrieved"):
            assert bad not in err, err
        return code, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        yield started
    finally:
        for s in started:
            s.kill()


def _common(world: World) -> list[str]:
    return ["--cert", world.server.cert, "--key", world.server.key,
            "--allow", "._device.example.test", "--trust-anchor", world.anchor_file]  # fmt: skip


def session(world: World, port: int, files: Files, name: str) -> Any:
    """A TLS connection with an accepted MQTT session (CONNACK 0), or None when refused."""
    context = client_context(name=name, cert=files.cert, key=files.key, cafile=world.ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = context.wrap_socket(raw, server_hostname="localhost")
    try:
        s.sendall(encode_connect(Connect(level=4, clean_start=True, keep_alive=60, client_id="")))
        connack = s.recv(4)
    except (OSError, ssl.SSLError):
        connack = b""
    if connack[:1] == b"\x20" and connack[-1:] == b"\x00":
        return s
    s.close()
    return None


def accepted(world: World, port: int, files: Files, name: str) -> bool:
    s = session(world, port, files, name)
    if s is None:
        return False
    s.close()
    return True


def ping(s: Any) -> bytes:
    s.sendall(PINGREQ)
    return bytes(s.recv(2))


def test_sigterm_drains_established_sessions_then_exits_0(
    world: World, broker: Broker, services: list[Service]
) -> None:
    svc = Service(world, broker, *_common(world), "--drain-timeout", "30")
    services.append(svc)
    s = session(world, svc.port, world.device, DEVICE)
    assert s is not None
    svc.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while True:  # it stops accepting
        try:
            socket.create_connection(("127.0.0.1", svc.port), timeout=5).close()
        except (ConnectionRefusedError, ConnectionResetError):  # a reset: the listener closed
            break  # with our connection in its backlog
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        time.sleep(0.05)
    assert ping(s) == PINGRESP  # the established session is still relayed to Mosquitto
    assert svc.proc.poll() is None
    s.close()  # it ends by itself: the service exits long before the deadline
    code, _ = svc.stop()
    assert code == 0 and "stopped (0 connection(s) cut" in svc.line("stopped")

    svc = Service(world, broker, *_common(world), "--drain-timeout", "0.5")
    services.append(svc)
    s = session(world, svc.port, world.device, DEVICE)
    assert s is not None and ping(s) == PINGRESP
    code, _ = svc.stop()  # the session is cut at the deadline
    assert code == 0 and "stopped (1 connection(s) cut" in svc.line("stopped")
    s.settimeout(20)
    with contextlib.suppress(OSError):  # closed, or reset
        assert s.recv(1) == b""
    s.close()


def test_sighup_reloads_and_keeps_the_old_configuration_when_the_new_is_bad(
    world: World, broker: Broker, services: list[Service], tmp_path: Path
) -> None:
    allow = tmp_path / "allow.txt"
    cert, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    anchor = tmp_path / "anchor.txt"
    shutil.copy(world.server.cert, cert)
    shutil.copy(world.server.key, key_file)
    shutil.copy(world.anchor_file, anchor)
    allow.write_text(f"# re-read on SIGHUP\n{OTHER}\n")
    ca_key = key(0)  # the CA of the test world: clients verify the new certificate with it
    ca = certs.new_ca(ca_key, "TLS test server CA", now=NOW)
    new_key = key(8)
    new_cert = certs.issue_certificate(
        ca, ca_key, new_key.public_key(), dns_names=["localhost"], now=NOW, client_auth=False
    )
    stranger = Hierarchy("test.", ttl=60)  # other keys: its anchor makes every answer bogus
    stranger.sign(algorithm=13, denial="nsec3")

    def peer_cert() -> bytes:
        context = client_context(
            name=DEVICE, cert=world.device.cert, key=world.device.key, cafile=world.ca
        )
        with (
            socket.create_connection(("127.0.0.1", svc.port), timeout=20) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            der = s.getpeercert(binary_form=True)
        assert der
        return der

    svc = Service(
        world, broker, "--cert", str(cert), "--key", str(key_file),
        "--allow-file", str(allow), "--trust-anchor", str(anchor), "-v",
    )  # fmt: skip
    services.append(svc)
    assert not accepted(world, svc.port, world.device, DEVICE)
    held = session(world, svc.port, world.other, OTHER)
    assert held is not None
    # the allow-list
    allow.write_text(f"{DEVICE}\n")
    svc.signal(signal.SIGHUP, "configuration reloaded")
    assert accepted(world, svc.port, world.device, DEVICE)
    assert not accepted(world, svc.port, world.other, OTHER)
    # bad new configurations: refused, logged, the old one kept
    allow.write_text("bad..name\n")
    svc.signal(signal.SIGHUP, "reload refused")
    allow.write_text(f"{DEVICE}\n")
    cert.write_text("not a certificate\n")
    svc.signal(signal.SIGHUP, "reload refused")
    shutil.copy(world.server.cert, cert)
    anchor.write_text("garbage\n")
    svc.signal(signal.SIGHUP, "reload refused")
    assert accepted(world, svc.port, world.device, DEVICE)
    # the certificate and key
    old_der = peer_cert()
    cert.write_bytes(certs.certificate_pem(new_cert))
    certs.write_private_key(key_file, new_key)
    anchor.write_text(Path(world.anchor_file).read_text())
    svc.signal(signal.SIGHUP, "configuration reloaded")
    new_der = peer_cert()
    assert new_der == new_cert.public_bytes(serialization.Encoding.DER) != old_der
    # the trust anchors: a stranger's anchor makes the (fresh) lookups bogus
    anchor.write_text(stranger.export_trust_anchor())
    svc.signal(signal.SIGHUP, "configuration reloaded")
    assert not accepted(world, svc.port, world.device, DEVICE)
    anchor.write_text(Path(world.anchor_file).read_text())
    svc.signal(signal.SIGHUP, "configuration reloaded")
    assert accepted(world, svc.port, world.device, DEVICE)
    # the session opened before all this is still relayed
    assert ping(held) == PINGRESP
    held.close()
    code, err = svc.stop()
    assert code == 0
    assert err.count("reload refused") == 3  # logged as well


def test_workers_config_file_access_log_and_metrics(
    world: World, broker: Broker, services: list[Service], tmp_path: Path
) -> None:
    """--config FILE with workers = 2: one port, two processes; one JSON access line per
    decision; each worker serves its metrics (PORT and PORT+1), with the MQTT counters."""
    metrics = free_port_pair()
    config = tmp_path / "mqtt-proxy.toml"
    config.write_text(
        f'cert = "{world.server.cert}"\nkey = "{world.server.key}"\n'
        f'allow = ["._device.example.test"]\ntrust-anchor = "{world.anchor_file}"\n'
        f'workers = 2\nlog-format = "json"\nmetrics = "127.0.0.1:{metrics}"\n'
    )
    svc = Service(world, broker, "--config", str(config))
    services.append(svc)
    results = []
    for _ in range(4):
        results.append(accepted(world, svc.port, world.device, DEVICE))
        results.append(accepted(world, svc.port, world.impostor, DEVICE))
    assert results == [True, False] * 4

    pages = [metrics_page(metrics + i) for i in range(2)]
    counts = counter_sums(pages, "dance_decisions_total{", "dance_mqtt_connects")
    assert counts['dance_decisions_total{outcome="accepted",reason="-"}'] == 4.0, pages
    assert counts['dance_decisions_total{outcome="rejected",reason="no-match"}'] == 4.0
    assert counts["dance_mqtt_connects"] == 4.0  # the CONNECTs relayed, over both workers
    code, err = svc.stop()
    assert code == 0
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert sorted(d["outcome"] for d in lines) == ["accepted"] * 4 + ["rejected"] * 4
    for doc in lines:
        assert doc["service"] == "mqtt-proxy" and doc["client_name"] == DEVICE
        assert doc["client"].startswith("127.0.0.1:")
