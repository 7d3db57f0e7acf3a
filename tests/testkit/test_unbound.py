"""A real validator (Debian's Unbound) accepts what the kit serves, and rejects its faults.

Unbound runs in the foreground on a free loopback port, with the kit's exported trust anchor
and one stub-zone per kit zone pointing at the embedded server (referrals would need port 53).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from _testkit_support import TLSA_EE, require_binary

from dance.testkit import Fault, Hierarchy, ServerThread

pytestmark = pytest.mark.integration

FAULT_CASES = {
    # fault, name queried (each queried only while its fault is active: no cache effects)
    "bad-signature": (Fault("bad-signature", "bad._device.example.test."), "bad"),
    "expired-rrsig": (Fault("expired-rrsig", "expired._device.example.test."), "expired"),
    "stripped-rrsig": (Fault("stripped-rrsig", "stripped._device.example.test."), "stripped"),
    "wrong-ds": (Fault("wrong-ds", "wrongds.example.test."), "t.wrongds"),
    "stripped-denial": (
        Fault("stripped-denial", "z.wild._device.example.test."),
        "z.wild._device",  # wildcard answer without the proof that no closer name exists
    ),
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _hierarchy(denial: str) -> Hierarchy:
    h = Hierarchy("test.")
    example = h.child("example.test.")
    device = h.child("_device.example.test.")
    wrongds = h.child("wrongds.example.test.")
    missingds = h.child("missingds.example.test.")
    for zone in (wrongds, missingds):
        zone.add("t", "TLSA", TLSA_EE)
    device.add("sensor7", "TLSA", TLSA_EE)
    device.add("*.wild", "TLSA", "2 0 1 " + "cd" * 32)
    for name in ("bad", "expired", "stripped"):
        device.add(name, "TLSA", TLSA_EE)
    example.add("alias", "CNAME", "sensor7._device.example.test.")
    h.sign(13, denial)  # type: ignore[arg-type]  # real clock: Unbound checks validity
    return h


@dataclass
class Setup:
    zones: Hierarchy
    port: int
    log: Path

    def bogus_logged(self, qname: str) -> bool:
        """Unbound logged a DNSSEC validation failure for qname (not some other failure)."""
        for _ in range(20):
            if f"validation failure <{qname} " in self.log.read_text():
                return True
            time.sleep(0.05)
        return False

    def ask(self, name: str, rdtype: str = "TLSA") -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp(query, "127.0.0.1", port=self.port, timeout=10)


def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 10
    probe = dns.message.make_query("test.", "SOA")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"unbound exited with {proc.returncode}")
        try:
            dns.query.udp(probe, "127.0.0.1", port=port, timeout=0.2)
            return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
    raise RuntimeError("unbound did not answer within 10 s")


@pytest.fixture(scope="module", params=["nsec", "nsec3"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    unbound = require_binary("unbound")
    zones = _hierarchy(request.param)
    workdir: Path = tmp_path_factory.mktemp(f"unbound-{request.param}")
    anchor = workdir / "anchor.txt"
    anchor.write_text(zones.export_trust_anchor())
    with ServerThread(zones) as server:
        stubs = "".join(
            f'stub-zone:\n  name: "{zone.origin.to_text()}"\n  stub-addr: 127.0.0.1@{server.port}\n'
            for zone in zones
        )
        proc, port = _start_unbound(unbound, workdir, anchor, stubs)
        try:
            yield Setup(zones, port, workdir / "unbound.log")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _start_unbound(
    unbound: str, workdir: Path, anchor: Path, stubs: str
) -> tuple[subprocess.Popen[bytes], int]:
    """Start Unbound in the foreground on a free port (retrying if the port got taken)."""
    log = workdir / "unbound.log"
    for _ in range(3):
        port = _free_port()
        conf = workdir / "unbound.conf"
        conf.write_text(
            f"""server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  chroot: ""
  username: ""
  directory: "{workdir}"
  pidfile: "{workdir}/unbound.pid"
  use-syslog: no
  logfile: "{log}"
  verbosity: 1
  val-log-level: 2
  trust-anchor-file: "{anchor}"
  local-zone: "test." nodefault
  do-not-query-localhost: no
  module-config: "validator iterator"
  val-bogus-ttl: 5
  aggressive-nsec: no
remote-control:
  control-enable: no
{stubs}"""
        )
        with (workdir / "unbound.stderr").open("ab") as stderr:
            proc = subprocess.Popen(
                [unbound, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            _wait_ready(proc, port)
            return proc, port
        except RuntimeError:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    details = log.read_text() if log.exists() else ""
    raise RuntimeError(f"unbound did not start:\n{details[-2000:]}")


def _secure(response: dns.message.Message) -> bool:
    return bool(response.flags & dns.flags.AD)


def test_positive_tlsa(setup: Setup) -> None:
    response = setup.ask("sensor7._device.example.test.")
    assert response.rcode() == dns.rcode.NOERROR and _secure(response)
    assert response.answer


def test_wildcard_tlsa(setup: Setup) -> None:
    response = setup.ask("device-42.wild._device.example.test.")
    assert response.rcode() == dns.rcode.NOERROR and _secure(response)
    assert response.answer[0].name.to_text() == "device-42.wild._device.example.test."


def test_nxdomain(setup: Setup) -> None:
    response = setup.ask("unknown._device.example.test.")
    assert response.rcode() == dns.rcode.NXDOMAIN and _secure(response)


def test_nodata(setup: Setup) -> None:
    response = setup.ask("sensor7._device.example.test.", "A")
    assert response.rcode() == dns.rcode.NOERROR and _secure(response) and not response.answer
    ent = setup.ask("wild._device.example.test.")
    assert ent.rcode() == dns.rcode.NOERROR and _secure(ent) and not ent.answer


def test_cname_across_zones(setup: Setup) -> None:
    response = setup.ask("alias.example.test.")
    assert response.rcode() == dns.rcode.NOERROR and _secure(response)
    types = {dns.rdatatype.to_text(r.rdtype) for r in response.answer}
    assert {"CNAME", "TLSA"} <= types


def test_missing_ds_is_insecure(setup: Setup) -> None:
    with setup.zones.inject(Fault("missing-ds", "missingds.example.test.")):
        response = setup.ask("t.missingds.example.test.")
    assert response.rcode() == dns.rcode.NOERROR and response.answer and not _secure(response)


@pytest.mark.parametrize("case", list(FAULT_CASES))
def test_fault_gives_servfail(setup: Setup, case: str) -> None:
    fault, label = FAULT_CASES[case]
    qname = f"{label}.{'_device.' if '.' not in label else ''}example.test."
    with setup.zones.inject(fault):
        response = setup.ask(qname)
    assert response.rcode() == dns.rcode.SERVFAIL, case
    assert setup.bogus_logged(qname), case
