"""`dance fleet provision` killed (-9) while creating identities and while publishing them, then
run again: every identity is whole and published exactly once (issue: nothing published is lost)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from dance.tlsa import TLSARecord, make_record
from tests.provision.knot import Primary, start_primary

pytestmark = pytest.mark.integration
ZONE = "fleet.test"
DANCE = str(Path(sys.executable).with_name("dance"))


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    p = start_primary(tmp_path_factory.mktemp("knot-fleet"), ZONE)
    try:
        yield p
    finally:
        p.server.stop()


def _serial(p: Primary) -> int:
    answer = dns.query.tcp(
        dns.message.make_query(ZONE + ".", "SOA"), "127.0.0.1", port=p.server.port
    )
    return int(answer.answer[0][0].serial)


def _tlsa(p: Primary, owner: str) -> list[TLSARecord]:
    answer = dns.query.tcp(
        dns.message.make_query(owner + ".", "TLSA"), "127.0.0.1", port=p.server.port
    )
    return [
        TLSARecord.from_wire(rd.to_wire())
        for rrset in answer.answer
        if rrset.rdtype == dns.rdatatype.TLSA
        for rd in rrset
    ]


def test_killed_and_rerun_publishes_each_identity_exactly_once(
    primary: Primary, tmp_path: Path
) -> None:
    from cryptography import x509

    devices = tmp_path / "devices.txt"
    devices.write_text("".join(f"unit{i:04d}\n" for i in range(1200)))
    ids = tmp_path / "ids"
    cmd = [
        DANCE, "fleet", "provision", str(devices), "--domain", ZONE, "--zone", ZONE,
        "--out-dir", str(ids), "--server", primary.hostport,
        "--tsig-key-file", str(primary.key_file), "--batch", "40", "--workers", "1",
    ]  # fmt: skip

    # 1. killed while creating identities
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (ids.exists() and sum(1 for _ in ids.glob("*.pem")) >= 150):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    # 2. run again, killed while publishing (after the zone's serial moved)
    before = _serial(primary)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _serial(primary) == before:
        assert proc.poll() is None, "finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert _serial(primary) != before

    # 3. run to the end
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already published" in done.stdout

    certs = sorted(ids.glob("*.pem"))
    assert len(certs) == 1200
    for pem in certs:
        owner = pem.name[: -len(".pem")]
        assert (ids / f"{owner}.key").stat().st_size > 0
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        expected = make_record(cert.public_key(), 3, 1, 1)
        assert _tlsa(primary, owner) == [expected], owner
    assert not [p for p in ids.iterdir() if ".tmp-" in p.name]  # atomic writes left nothing
