"""DNS over TLS with DANCE client authentication (architecture Example 9): the authority's
access list names secondaries by ClientName; their TLSA records live in the served zone
(``sec1._device.example.test``), so the Authenticator's resolver is the authority itself."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from dance import certs, make_record
from dance.auth import Authenticator
from dance.authority import Authority, Limits, XoTConfig
from dance.credentials import load_certificates
from dance.dns import TLSAResolver, TrustAnchors
from dance.tls import client_context
from tests.authority.conftest import ZONE, make_zone_dir
from tests.conftest import require_binary
from tests.integration.servers import free_port
from tests.pki import key

NOW = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
SEC1 = "sec1._device.example.test"  # published, in xfr_allow
SEC2 = "sec2._device.example.test"  # published, not in xfr_allow
UNPUBLISHED = "sec3._device.example.test"
OUTSIDE = "sec1.example.org"  # outside the Authenticator's allow-list


@dataclass
class Creds:
    cert: str
    key: str


@dataclass
class XEnv:
    authority: Authority
    dir: Path
    sec1: Creds
    sec2: Creds
    impostor: Creds  # SEC1's name, another key
    unpublished: Creds
    outside: Creds

    @property
    def tls_port(self) -> int:
        return self.authority.tls_address[1]


def _creds(d: Path, label: str, name: str, index: int) -> Creds:
    k = key(index)
    cert = certs.self_signed(k, name, now=NOW)
    (d / f"{label}.pem").write_bytes(certs.certificate_pem(cert))
    certs.write_private_key(d / f"{label}.key", k)
    return Creds(str(d / f"{label}.pem"), str(d / f"{label}.key"))


def _tlsa(creds: Creds) -> str:
    return make_record(load_certificates(Path(creds.cert).read_bytes())[0], 3, 1, 1).to_text()


@pytest.fixture
def xenv(tmp_path: Path) -> Iterator[XEnv]:
    zone_dir, anchor = make_zone_dir(tmp_path)
    sec1 = _creds(tmp_path, "sec1", SEC1, 2)
    sec2 = _creds(tmp_path, "sec2", SEC2, 3)
    impostor = _creds(tmp_path, "impostor", SEC1, 5)
    unpublished = _creds(tmp_path, "sec3", UNPUBLISHED, 6)
    outside = _creds(tmp_path, "outside", OUTSIDE, 7)
    with (zone_dir / "example.test.zone").open("a") as out:
        out.write(f"{SEC1}. 300 IN TLSA {_tlsa(sec1)}\n")
        out.write(f"{SEC2}. 300 IN TLSA {_tlsa(sec2)}\n")
        out.write(f"{OUTSIDE}. 300 IN TLSA {_tlsa(outside)}\n".replace("example.org", "x.org"))
    server_key = key(1)
    server_cert = certs.self_signed(server_key, "ns1.example.test", now=NOW)
    (tmp_path / "server.pem").write_bytes(certs.certificate_pem(server_cert))
    certs.write_private_key(tmp_path / "server.key", server_key)
    port = free_port()
    resolver = TLSAResolver(
        ("127.0.0.1", port), anchors=TrustAnchors.from_text(anchor), recursion_desired=False
    )
    authenticator = Authenticator(resolver, allow=["._device.example.test"])
    config = XoTConfig(
        cert=tmp_path / "server.pem",
        key=tmp_path / "server.key",
        authenticator=authenticator,
        xfr_allow=[SEC1],
        san_fallback=True,
    )
    authority = Authority(zone_dir, limits=Limits(rate=0), tls=config).start(port=port)
    try:
        yield XEnv(authority, tmp_path, sec1, sec2, impostor, unpublished, outside)
    finally:
        authority.stop()


async def _exchange(
    port: int, creds: Creds, name: str | None, queries: list[dns.message.Message]
) -> list[list[dns.message.Message]]:
    """Send each query over one TLS connection; collect every reply (several for AXFR)."""
    ctx = client_context(name=name, cert=creds.cert, key=creds.key, verify_server=False)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    out: list[list[dns.message.Message]] = []
    try:
        for query in queries:
            wire = query.to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            replies: list[dns.message.Message] = []
            while True:
                async with asyncio.timeout(5):
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(length)
                reply = dns.message.from_wire(data, one_rr_per_rrset=True)
                replies.append(reply)
                if query.question[0].rdtype != dns.rdatatype.AXFR or reply.rcode():
                    break
                soas = [r for m in replies for r in m.answer if r.rdtype == dns.rdatatype.SOA]
                if len(soas) >= 2:
                    break
            out.append(replies)
    finally:
        writer.close()
    return out


def run(
    port: int, creds: Creds, name: str | None, *queries: dns.message.Message
) -> list[list[dns.message.Message]]:
    return asyncio.run(_exchange(port, creds, name, list(queries)))


def axfr() -> dns.message.Message:
    return dns.message.make_query(ZONE, "AXFR")


def query(name: str = "www.example.test.", rdtype: str = "A") -> dns.message.Message:
    return dns.message.make_query(name, rdtype)


def owners(replies: list[dns.message.Message]) -> set[str]:
    return {r.name.to_text() for m in replies for r in m.answer}


def test_axfr_and_queries_over_tls_with_dane_clientid(xenv: XEnv) -> None:
    first, transfer, third = run(
        xenv.tls_port, xenv.sec1, SEC1, query(), axfr(), query(SEC1 + ".", "TLSA")
    )
    a, b = first[0], third[0]
    assert a.rcode() == dns.rcode.NOERROR and a.answer[0].to_text().endswith("192.0.2.1")
    assert transfer[0].rcode() == dns.rcode.NOERROR
    names = owners(transfer)
    assert {ZONE, "www.example.test.", SEC1 + ".", SEC2 + "."} <= names
    types = {r.rdtype for m in transfer for r in m.answer}
    assert {dns.rdatatype.SOA, dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY} <= types
    assert all(m.tsig is None for m in transfer)  # no TSIG needed over DANCE-TLS
    assert b.rcode() == dns.rcode.NOERROR and b.answer
    assert xenv.authority.stats.transfers == 1


def test_published_client_not_in_xfr_allow_gets_refused_transfer(xenv: XEnv) -> None:
    (q,), (t,) = run(xenv.tls_port, xenv.sec2, SEC2, query(), axfr())
    assert q.rcode() == dns.rcode.NOERROR and q.answer
    assert t.rcode() == dns.rcode.REFUSED and not t.answer
    assert xenv.authority.stats.transfers == 0


def _refused(port: int, creds: Creds, name: str | None) -> None:
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError, OSError)):
        run(port, creds, name, query())


@pytest.mark.parametrize("who", ["impostor", "unpublished", "outside"])
def test_refused_clients_get_nothing(xenv: XEnv, who: str) -> None:
    creds: Creds = getattr(xenv, who)
    name = {"impostor": SEC1, "unpublished": UNPUBLISHED, "outside": OUTSIDE}[who]
    _refused(xenv.tls_port, creds, name)
    assert xenv.authority.tls is not None
    tls_stats = xenv.authority.tls.core.stats
    assert tls_stats.get("rejected") == 1 and tls_stats.get("accepted") == 0, tls_stats
    assert xenv.authority.stats.transfers == 0


def test_plain_tcp_axfr_still_needs_tsig(xenv: XEnv) -> None:
    import dns.query

    reply = dns.query.tcp(axfr(), "127.0.0.1", port=xenv.authority.port, timeout=5)
    assert reply.rcode() == dns.rcode.REFUSED


def test_unsigned_update_over_tls_refused(xenv: XEnv) -> None:
    import dns.update

    update = dns.update.UpdateMessage(ZONE)
    update.add("new.example.test.", 300, "A", "192.0.2.9")
    ((reply,),) = run(xenv.tls_port, xenv.sec1, SEC1, update)
    assert reply.rcode() == dns.rcode.REFUSED
    assert xenv.authority.stats.updates_applied == 0


def test_query_allow_restricts_queries(tmp_path: Path) -> None:
    zone_dir, anchor = make_zone_dir(tmp_path)
    sec2 = _creds(tmp_path, "sec2", SEC2, 3)
    with (zone_dir / "example.test.zone").open("a") as out:
        out.write(f"{SEC2}. 300 IN TLSA {_tlsa(sec2)}\n")
    port = free_port()
    resolver = TLSAResolver(
        ("127.0.0.1", port), anchors=TrustAnchors.from_text(anchor), recursion_desired=False
    )
    config = XoTConfig(
        cert=sec2.cert,
        key=sec2.key,
        authenticator=Authenticator(resolver, allow=["._device.example.test"]),
        xfr_allow=[SEC1],
        query_allow=[SEC1],
    )
    with Authority(zone_dir, limits=Limits(rate=0), tls=config).start(port=port) as auth:
        ((reply,),) = run(auth.tls_address[1], sec2, SEC2, query())
        assert reply.rcode() == dns.rcode.REFUSED and not reply.answer


# ------------------------------------------------------------------- real peer: Knot's kdig


def _kdig(port: int, creds: Creds, *args: str) -> subprocess.CompletedProcess[str]:
    kdig = require_binary("kdig")
    return subprocess.run(
        [
            kdig,
            "@127.0.0.1",
            "-p",
            str(port),
            "+tls",
            f"+tls-certfile={creds.cert}",
            f"+tls-keyfile={creds.key}",
            "+time=3",
            "+retry=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_kdig_axfr_over_tls_with_san_fallback(xenv: XEnv) -> None:
    ok = _kdig(xenv.tls_port, xenv.sec1, ZONE, "AXFR")
    assert ok.returncode == 0, ok.stderr
    assert "www.example.test." in ok.stdout and "RRSIG" in ok.stdout
    assert ok.stdout.count("\tSOA\t") >= 2
    assert xenv.authority.stats.transfers == 1
    bad = _kdig(xenv.tls_port, xenv.unpublished, ZONE, "AXFR")
    assert "www.example.test." not in bad.stdout
    assert xenv.authority.stats.transfers == 1
    assert xenv.authority.tls is not None
    stats = xenv.authority.tls.core.stats
    assert stats.get("rejected") == 1 and stats.get("accepted") == 1, stats


def test_kdig_query_and_refused_transfer(xenv: XEnv) -> None:
    q = _kdig(xenv.tls_port, xenv.sec2, "www.example.test.", "A")
    assert q.returncode == 0 and "192.0.2.1" in q.stdout, q.stdout + q.stderr
    t = _kdig(xenv.tls_port, xenv.sec2, ZONE, "AXFR")
    assert "REFUSED" in t.stdout + t.stderr
    assert xenv.authority.stats.transfers == 0


# ------------------------------------------------------------------------------ the CLI


def test_cli_tls_listen_with_kdig(tmp_path: Path) -> None:
    import re
    import signal
    import sys

    kdig = require_binary("kdig")
    zone_dir, _ = make_zone_dir(tmp_path)
    sec1 = _creds(tmp_path, "sec1", SEC1, 2)
    sec3 = _creds(tmp_path, "sec3", UNPUBLISHED, 6)
    with (zone_dir / "example.test.zone").open("a") as out:
        out.write(f"{SEC1}. 300 IN TLSA {_tlsa(sec1)}\n")
    server_key = key(1)
    (tmp_path / "server.pem").write_bytes(
        certs.certificate_pem(certs.self_signed(server_key, "ns1.example.test", now=NOW))
    )
    certs.write_private_key(tmp_path / "server.key", server_key)
    port, tls_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dance.cli", "authority", "--zone-dir", str(zone_dir),
         "--listen", f"127.0.0.1:{port}", "--tls-listen", f"127.0.0.1:{tls_port}",
         "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
         "--xfr-allow", SEC1, "--tls-san-fallback"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        process.stdout.readline()
        line = process.stdout.readline()
        assert re.search(rf"DNS over TLS .* port {tls_port}", line), line
        ok = _kdig(tls_port, sec1, ZONE, "AXFR")
        assert ok.returncode == 0 and "www.example.test." in ok.stdout, ok.stderr
        bad = _kdig(tls_port, sec3, ZONE, "AXFR")
        assert "www.example.test." not in bad.stdout
        assert kdig
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "DANCE-authenticated TLS client" in err


def test_cli_tls_listen_needs_cert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dance.cli import main

    zone_dir, _ = make_zone_dir(tmp_path)
    code = main(
        ["authority", "--zone-dir", str(zone_dir), "--tls-listen", "127.0.0.1:0",
         "--xfr-allow", SEC1]
    )  # fmt: skip
    assert code == 2
    assert "--tls-cert" in capsys.readouterr().err


# ---------------------------------------------------------------------------- hardening


def _config(tmp: Path, anchor: str, **kw: object) -> XoTConfig:
    sec = _creds(tmp, "srv", "ns1.example.test", 1)
    resolver = TLSAResolver(("127.0.0.1", 9), anchors=TrustAnchors.from_text(anchor))
    options: dict[str, object] = {"cert": sec.cert, "key": sec.key, "xfr_allow": [SEC1]}
    options.update(kw)
    return XoTConfig(authenticator=Authenticator(resolver, allow=[SEC1]), **options)  # type: ignore[arg-type]


def test_tls_listener_refuses_non_loopback(tmp_path: Path) -> None:
    from dance.authority import AuthorityError

    zone_dir, anchor = make_zone_dir(tmp_path)
    authority = Authority(zone_dir, tls=_config(tmp_path, anchor, host="0.0.0.0"))
    with pytest.raises(AuthorityError) as info:
        authority.start()
    assert info.value.reason == "non-loopback"
    authority.stop()


def test_tls_connection_caps_and_idle_timeout(tmp_path: Path) -> None:
    zone_dir, anchor = make_zone_dir(tmp_path)
    sec1 = _creds(tmp_path, "sec1", SEC1, 2)
    with (zone_dir / "example.test.zone").open("a") as out:
        out.write(f"{SEC1}. 300 IN TLSA {_tlsa(sec1)}\n")
    port = free_port()
    resolver = TLSAResolver(
        ("127.0.0.1", port), anchors=TrustAnchors.from_text(anchor), recursion_desired=False
    )
    config = XoTConfig(
        cert=sec1.cert,
        key=sec1.key,
        authenticator=Authenticator(resolver, allow=[SEC1]),
        xfr_allow=[SEC1],
    )
    limits = Limits(rate=0, max_tcp_per_client=1, tcp_idle_timeout=0.5)
    with Authority(zone_dir, limits=limits, tls=config).start(port=port) as auth:
        tls_port = auth.tls_address[1]

        async def scenario() -> tuple[bytes, bytes, bytes]:
            ctx = client_context(name=SEC1, cert=sec1.cert, key=sec1.key, verify_server=False)
            r1, w1 = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx)
            wire = query().to_wire()
            w1.write(len(wire).to_bytes(2, "big") + wire)
            first = await asyncio.wait_for(r1.read(2), 5)  # the first connection is served
            r2, w2 = await asyncio.open_connection("127.0.0.1", tls_port, ssl=ctx)
            try:
                second = await asyncio.wait_for(r2.read(100), 5)  # over the cap: closed
            except (ConnectionError, OSError):
                second = b""
            w2.close()
            await asyncio.wait_for(r1.readexactly(int.from_bytes(first, "big")), 5)
            try:
                idle = await asyncio.wait_for(r1.read(100), 5)  # idle timeout closes it
            except (ConnectionError, OSError):
                idle = b""
            w1.close()
            return first, second, idle

        first, second, idle = asyncio.run(scenario())
        assert len(first) == 2 and second == b"" and idle == b""
        assert auth.stats.tcp_refused == 1
