"""Interop: the project's client and server against an independent dane_clientid implementation
(tlslite-ng, tests/tls/tlslite_peer.py) in both directions, and ``openssl s_client`` (which sends
no extension) against the server with the SAN fallback on and off."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from dance.tls import announce_client_cas, connect, negotiated
from tests.conftest import require_binary
from tests.tls.common import DEVICE, Served, World, make_world, run_with_server

tlslite_peer = pytest.importorskip("tests.tls.tlslite_peer")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("interop"))


def _peer_connect(world: World, port: int, name: str | None, files: object, **kw: object) -> object:
    return tlslite_peer.connect(
        "127.0.0.1",
        port,
        client_name=name,
        cert_pem=Path(files.cert).read_bytes(),  # type: ignore[attr-defined]
        key_pem=Path(files.key).read_bytes(),  # type: ignore[attr-defined]
        server_name="localhost",
        **kw,
    )


# -- the independent client against our server ----------------------------------------------------


def test_peer_client_accepted_and_refused(world: World) -> None:
    async def scenario(s: Served) -> None:
        loop = asyncio.get_running_loop()

        def run(name: str | None, files: object, **kw: object) -> object:
            return _peer_connect(world, s.server.port, name, files, **kw)

        ok = await loop.run_in_executor(None, run, DEVICE, world.device)
        assert ok.accepted, ok  # type: ignore[attr-defined]
        assert ok.reply == f"hello {DEVICE}\n".encode()  # type: ignore[attr-defined]
        assert ok.server_requested_extension  # type: ignore[attr-defined]
        assert ok.server_extension_data == b"\x00"  # type: ignore[attr-defined]  # TV-EXT-1
        # now cached: the refusal happens inside the handshake, with the generic alert
        bad = await loop.run_in_executor(None, run, DEVICE, world.impostor)
        assert not bad.accepted  # type: ignore[attr-defined]
        assert bad.alert == "handshake_failure", bad  # type: ignore[attr-defined]
        malformed = await loop.run_in_executor(
            None, lambda: run(DEVICE, world.device, raw_extension_data=b"\x05a")
        )
        assert not malformed.accepted  # type: ignore[attr-defined]
        assert malformed.alert == "decode_error"  # type: ignore[attr-defined]  # TC-P2
        empty = await loop.run_in_executor(
            None, lambda: run(DEVICE, world.device, raw_extension_data=b"\x00")
        )
        assert empty.alert == "handshake_failure"  # type: ignore[attr-defined]  # TC-P1
        absent = await loop.run_in_executor(
            None, lambda: run(DEVICE, world.device, send_extension=False)
        )
        assert absent.alert == "handshake_failure"  # type: ignore[attr-defined]
        stats = s.server.stats
        assert stats.get("rejected_no-match") == 1
        assert stats.get("rejected_malformed-extension") == 1
        assert stats.get("rejected_empty-client-name") == 1
        assert stats.get("rejected_extension-absent") == 1
        assert [i.identity for i in s.seen] == [DEVICE]

    run_with_server(world, scenario)


# -- our client against the independent server ----------------------------------------------------


async def _our_client(world: World, port: int, name: str) -> tuple[bytes, dict[str, object]]:
    reader, writer = await connect(
        "127.0.0.1",
        port,
        name=name,
        cert=world.device.cert,
        key=world.device.key,
        cafile=world.ca,
        server_hostname="localhost",
    )
    info = negotiated(writer)
    writer.write(b"ping\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return reply, info


def test_our_client_against_peer_server(world: World) -> None:
    cert = Path(world.server.cert).read_bytes()
    key = Path(world.server.key).read_bytes()
    with tlslite_peer.run_server(cert, key) as peer:
        reply, info = asyncio.run(_our_client(world, peer.port, DEVICE))
        (record,) = peer.wait_for_records(1)
    assert reply == b"ping\n"
    assert record.accepted and record.client_name == DEVICE.encode()
    assert record.extension_entries == (0,)  # first CertificateEntry only
    assert record.extension_data == bytes([len(DEVICE)]) + DEVICE.encode()  # TV-EXT-2
    assert info["clientid_requested"] is True


def test_our_client_sends_nothing_unless_requested(world: World) -> None:
    cert = Path(world.server.cert).read_bytes()
    key = Path(world.server.key).read_bytes()
    with tlslite_peer.run_server(cert, key, request_extension=False, strict=False) as peer:
        reply, info = asyncio.run(_our_client(world, peer.port, DEVICE))
        (record,) = peer.wait_for_records(1)
    assert reply == b"ping\n"
    assert record.extension_data is None and record.client_name is None
    assert info["clientid_requested"] is False and info["client_name_sent"] is None


def test_our_client_accepts_legacy_empty_signal(world: World) -> None:
    cert = Path(world.server.cert).read_bytes()
    key = Path(world.server.key).read_bytes()
    with tlslite_peer.run_server(cert, key, cr_extension_data=b"", strict=False) as peer:
        reply, _ = asyncio.run(_our_client(world, peer.port, DEVICE))
        (record,) = peer.wait_for_records(1)
    assert reply == b"ping\n"
    assert record.client_name == DEVICE.encode()  # TV-EXT-3 accepted by the client


# -- openssl s_client: no extension ------------------------------------------------------------


async def _s_client(openssl: str, world: World, port: int) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        openssl,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        "localhost",
        "-CAfile",
        world.ca,
        "-cert",
        world.device.cert,
        "-key",
        world.device.key,
        "-tls1_3",
        "-ign_eof",
        "-quiet",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(b"ping\n"), 20)
    return proc.returncode or 0, out.decode("utf-8", "replace")


@pytest.mark.parametrize("san_fallback", [True, False])
def test_openssl_s_client(world: World, san_fallback: bool) -> None:
    openssl = require_binary("openssl")

    async def scenario(s: Served) -> None:
        _, out = await _s_client(openssl, world, s.server.port)
        if san_fallback:
            assert f"hello {DEVICE}" in out, out
            assert [i.identity for i in s.seen] == [DEVICE]
        else:
            assert "hello" not in out, out
            assert s.seen == []
            assert s.server.stats.get("rejected_extension-absent") == 1

    run_with_server(world, scenario, san_fallback=san_fallback)


# -- CA names in the CertificateRequest (static hints from configuration) ----------------------


async def _ca_names_seen(openssl: str, world: World, port: int) -> str:
    proc = await asyncio.create_subprocess_exec(
        openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
        "-CAfile", world.ca, "-cert", world.device.cert, "-key", world.device.key, "-tls1_3",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(b""), 20)
    return out.decode("utf-8", "replace")


@pytest.mark.parametrize("announce", [True, False])
def test_client_ca_names_in_the_certificate_request(world: World, announce: bool) -> None:
    openssl = require_binary("openssl")
    ca = x509.load_pem_x509_certificate(Path(world.ca).read_bytes())
    cn = ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value

    async def scenario(s: Served) -> str:
        return await _ca_names_seen(openssl, world, s.server.port)

    names = [ca.subject.public_bytes()] if announce else []
    out = run_with_server(world, scenario, san_fallback=True, client_ca_names=names)
    if announce:
        section = out.split("Acceptable client certificate CA names", 1)[1]
        assert str(cn) in section.split("---", 1)[0], out
    else:
        assert "No client certificate CA names sent" in out, out
    assert "Verify return code: 0" in out, out  # the handshake is decided as before


@pytest.mark.parametrize("der", [b"", b"\x30\x00\x00", b"junk", b"\x30\x03\x31\x01"])
def test_client_ca_names_must_be_der_names(der: bytes) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ValueError):
        announce_client_cas(context, [der])
