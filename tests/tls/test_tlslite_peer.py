"""The independent tlslite-ng dane_clientid peer: wire format, both directions, and OpenSSL interop.

The peer (tests/tls/tlslite_peer.py) is itself test equipment for tests/tls/test_interop.py, so
these tests pin its behaviour: what goes on the wire (checked against OpenSSL's own ``-trace``
decoder, an implementation that knows nothing about dane_clientid), that the client sends the
extension only when asked, and that the server records what arrives and refuses malformed input.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dance import certs
from tests import pki
from tests.conftest import require_binary
from tests.integration.servers import free_port

if os.environ.get("DANCE_REQUIRE_INTEGRATION") != "1":
    pytest.importorskip("tlslite", reason="tlslite-ng (dev dependency) is not installed")

from tests.tls.tlslite_peer import (
    DEFAULT_CODEPOINT,
    ClientResult,
    ExtensionDecodeError,
    PeerServer,
    check_client_name,
    connect,
    decode_client_name,
    encode_client_name,
    run_server,
)

NAME = pki.NAME  # sensor7._device.example.com


@dataclass(frozen=True)
class Material:
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    client_der: bytes
    chain_pem: bytes  # CA-issued device certificate + intermediate (two entries)
    chain_key: bytes
    chain_der: tuple[bytes, ...]
    other_ca: bytes  # a CA that issued nothing presented here


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def mat() -> Material:
    server_key = pki.key(3)
    server = certs.self_signed(server_key, "server.example.com", now=pki.NOW)
    client_key = pki.key(4)
    client = certs.self_signed(client_key, NAME, now=pki.NOW)
    p = pki.make_pki()
    device = pki.device(p, key_index=2)
    other = pki.make_pki(ca_key_index=5, ca_name="Unrelated CA")
    return Material(
        server_cert=certs.certificate_pem(server),
        server_key=certs.private_key_pem(server_key),
        client_cert=certs.certificate_pem(client),
        client_key=certs.private_key_pem(client_key),
        client_der=_der(client),
        chain_pem=certs.certificate_pem(device, p.ica),
        chain_key=certs.private_key_pem(pki.key(2)),
        chain_der=(_der(device), _der(p.ica)),
        other_ca=certs.certificate_pem(other.ca),
    )


@pytest.fixture
def server(mat: Material) -> Iterator[PeerServer]:
    with run_server(mat.server_cert, mat.server_key) as srv:
        yield srv


def _connect(port: int, mat: Material, **kw: object) -> ClientResult:
    options: dict[str, object] = {
        "client_name": NAME,
        "cert_pem": mat.client_cert,
        "key_pem": mat.client_key,
    }
    options.update(kw)
    return connect("127.0.0.1", port, **options)  # type: ignore[arg-type]


def _peer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tlslite-")]


# --------------------------------------------------------------------------- wire format (TV-EXT)


@pytest.mark.parametrize(
    ("name", "expected_hex"),
    [
        (NAME, "1b73656e736f72372e5f6465766963652e6578616d706c652e636f6d"),  # TV-EXT-2
        (
            "_smtp-client.device1.example.com",
            "205f736d74702d636c69656e742e646576696365312e6578616d706c652e636f6d",
        ),  # TV-EXT-4
        ("device73.example.com", "1464657669636537332e6578616d706c652e636f6d"),  # TV-EXT-5
        ("_user.example.com", "115f757365722e6578616d706c652e636f6d"),  # TV-EXT-6
    ],
)
def test_client_name_encoding_matches_the_digest_vectors(name: str, expected_hex: str) -> None:
    data = encode_client_name(name)
    assert data.hex() == expected_hex
    assert decode_client_name(data) == name.encode()


def test_client_name_over_255_octets_cannot_be_encoded() -> None:
    encode_client_name("a" * 255)
    with pytest.raises(ValueError, match="uint8"):
        encode_client_name("a" * 256)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x05a", b"\x03abc\x00", b"\xff" + b"a" * 300],  # TC-P4, TC-P2, TC-P3, > 255
)
def test_malformed_extension_data_does_not_decode(data: bytes) -> None:
    with pytest.raises(ExtensionDecodeError):
        decode_client_name(data)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        (b"Sensor7._DEVICE.Example.COM", True),  # TC-P5
        (b"xn--bcher-kva.example", True),  # TC-P9
        (b"", False),  # TC-P1
        (NAME.encode() + b".", False),  # TC-P6
        (b"*._device.example.com", False),  # TC-P7
        ("bücher.example".encode(), False),  # TC-P8
        (b"a\\046b.example", False),  # TC-P10
        (b"a" * 64 + b".example", False),  # TC-P11
        (b".".join([b"a" * 63] * 3 + [b"a" * 62]), False),  # TC-P12: wire form 256 octets
        (b".".join([b"a" * 63] * 3 + [b"a" * 61]), True),  # wire form 255 octets
    ],
)
def test_client_name_syntax(name: bytes, ok: bool) -> None:
    assert (check_client_name(name) is None) is ok


# --------------------------------------------------------------------------- tlslite <-> tlslite


def test_name_arrives_intact(server: PeerServer, mat: Material) -> None:
    result = _connect(server.port, mat)
    assert result.accepted, result
    assert result.reply == b"ping\n"
    assert result.server_requested_extension
    assert result.server_extension_data == b"\x00"  # TV-EXT-1: zero-length ClientName
    assert result.sent_extension_data == encode_client_name(NAME)
    (record,) = server.wait_for_records(1)
    assert record.accepted and record.handshake_ok
    assert record.client_name == NAME.encode()
    assert record.extension_entries == (0,)
    assert record.chain == [mat.client_der]
    assert record.received == b"ping\n"
    assert result.server_chain and x509.load_der_x509_certificate(result.server_chain[0])


@pytest.mark.parametrize("kind", ["ed25519", "rsa-3072"])
@pytest.mark.integration
def test_other_key_types(s_server: object, mat: Material, kind: str) -> None:
    key = certs.generate_key(kind)  # type: ignore[arg-type]
    cert = certs.self_signed(key, NAME, now=pki.NOW)
    options = {"cert_pem": certs.certificate_pem(cert), "key_pem": certs.private_key_pem(key)}
    with run_server(certs.certificate_pem(cert), certs.private_key_pem(key)) as srv:
        result = _connect(srv.port, mat, **options)
        (record,) = srv.wait_for_records(1)
    assert result.accepted, result
    assert record.client_name == NAME.encode() and record.chain == [_der(cert)]
    port = s_server("-verify", "1")  # type: ignore[operator]
    assert _connect(port, mat, **options).reply == b"gnip\n"


def test_ca_issued_chain_carries_the_name_in_the_first_entry_only(
    server: PeerServer, mat: Material
) -> None:
    result = _connect(server.port, mat, cert_pem=mat.chain_pem, key_pem=mat.chain_key)
    assert result.accepted, result
    (record,) = server.wait_for_records(1)
    assert record.chain == list(mat.chain_der)
    assert record.extension_entries == (0,)
    assert record.client_name == NAME.encode()


def test_no_extension_when_the_server_did_not_request_it(mat: Material) -> None:
    with run_server(mat.server_cert, mat.server_key, request_extension=False) as srv:
        result = _connect(srv.port, mat)
        (record,) = srv.wait_for_records(1)
    assert result.accepted, result
    assert not result.server_requested_extension
    assert result.sent_extension_data is None
    assert record.client_name is None and record.extension_data is None
    assert record.extension_entries == ()
    assert record.chain == [mat.client_der]


def test_other_codepoint_is_not_a_request(mat: Material) -> None:
    with run_server(mat.server_cert, mat.server_key, codepoint=0xFFDD) as srv:
        result = _connect(srv.port, mat, codepoint=DEFAULT_CODEPOINT)
        (record,) = srv.wait_for_records(1)
    assert result.accepted
    assert not result.server_requested_extension
    assert result.sent_extension_data is None
    assert record.extension_entries == ()


def test_configured_codepoint_on_both_sides(mat: Material) -> None:
    with run_server(mat.server_cert, mat.server_key, codepoint=0xFF42) as srv:
        result = _connect(srv.port, mat, codepoint=0xFF42)
        (record,) = srv.wait_for_records(1)
    assert result.accepted
    assert record.client_name == NAME.encode()


@pytest.mark.parametrize(
    "signal",
    [b"", b"\x03abc"],  # TV-EXT-3 (tls-clientid-07 empty form); TC-P16 (content ignored)
)
def test_other_request_forms_are_honoured(mat: Material, signal: bytes) -> None:
    with run_server(mat.server_cert, mat.server_key, cr_extension_data=signal) as srv:
        result = _connect(srv.port, mat)
        (record,) = srv.wait_for_records(1)
    assert result.server_requested_extension and result.server_extension_data == signal
    assert result.accepted
    assert record.client_name == NAME.encode()


def test_client_can_decline_to_send(server: PeerServer, mat: Material) -> None:
    result = _connect(server.port, mat, send_extension=False)
    (record,) = server.wait_for_records(1)
    assert result.accepted  # an absent extension is recorded, not refused
    assert result.server_requested_extension and result.sent_extension_data is None
    assert record.client_name is None and record.extension_data is None


@pytest.mark.parametrize(
    ("options", "alert"),
    [
        ({"raw_extension_data": b""}, "decode_error"),  # TC-P4
        ({"raw_extension_data": b"\x00"}, "handshake_failure"),  # TC-P1
        ({"raw_extension_data": b"\x05a"}, "decode_error"),  # TC-P2
        ({"raw_extension_data": b"\x03abc\x00"}, "decode_error"),  # TC-P3
        ({"raw_extension_data": b"\xff" + b"a" * 300}, "decode_error"),  # over 255 octets
        ({"client_name": "bücher.example"}, "handshake_failure"),  # TC-P8 non-ASCII
        ({"client_name": NAME + "."}, "handshake_failure"),  # TC-P6
        ({"client_name": "*._device.example.com"}, "handshake_failure"),  # TC-P7
        ({"cert_pem": None, "key_pem": None}, "certificate_required"),
    ],
)
def test_server_refuses_malformed_input_and_keeps_serving(
    server: PeerServer, mat: Material, options: dict[str, object], alert: str
) -> None:
    bad = _connect(server.port, mat, **options)
    assert not bad.accepted
    assert bad.alert == alert, bad
    good = _connect(server.port, mat)
    assert good.accepted, good
    first, second = server.wait_for_records(2)
    assert not first.accepted and first.alert_sent == alert
    assert first.received == b""  # nothing of the refused client reached the "application"
    assert second.accepted and second.client_name == NAME.encode()


def test_concurrent_clients_each_get_their_own_record(server: PeerServer, mat: Material) -> None:
    clients = []
    for i in range(4):
        name = f"dev{i}._device.example.com"
        key = pki.key(i)
        cert = certs.self_signed(key, name, now=pki.NOW)
        clients.append((name, certs.certificate_pem(cert), certs.private_key_pem(key), _der(cert)))
    results: dict[str, ClientResult] = {}

    def run(name: str, cert: bytes, key: bytes) -> None:
        for _ in range(2):
            results[name] = _connect(server.port, mat, client_name=name, cert_pem=cert, key_pem=key)

    threads = [threading.Thread(target=run, args=c[:3]) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(r.accepted for r in results.values()) and len(results) == 4
    records = server.wait_for_records(8)
    by_cert = {der: name.encode() for name, _, _, der in clients}
    assert len(records) == 8
    for record in records:
        assert record.accepted
        assert record.client_name == by_cert[record.chain[0]]


def test_greeting_for_clients_that_read_first(mat: Material) -> None:
    with run_server(mat.server_cert, mat.server_key, greeting=b"hello\n") as srv:
        result = _connect(srv.port, mat)
        (record,) = srv.wait_for_records(1)
    assert result.accepted and result.reply == b"hello\n"
    assert record.received == b"ping\n"


def test_malformed_raw_bytes_are_recorded_verbatim(server: PeerServer, mat: Material) -> None:
    _connect(server.port, mat, raw_extension_data=b"\x05a")
    (record,) = server.wait_for_records(1)
    assert record.extension_data == b"\x05a"
    assert record.client_name is None


def test_extension_outside_the_first_entry_is_refused(server: PeerServer, mat: Material) -> None:
    # TC-P14
    result = _connect(
        server.port, mat, cert_pem=mat.chain_pem, key_pem=mat.chain_key, extension_entry=1
    )
    assert result.alert == "illegal_parameter"
    assert result.sent_extension_data == encode_client_name(NAME)
    (record,) = server.wait_for_records(1)
    assert record.extension_entries == (1,)
    assert record.client_name is None


def test_unsolicited_extension_is_refused(mat: Material) -> None:
    # TC-P15
    with run_server(mat.server_cert, mat.server_key, request_extension=False) as srv:
        result = _connect(srv.port, mat, force_extension=True)
        (record,) = srv.wait_for_records(1)
    assert result.alert == "unsupported_extension"
    assert record.extension_entries == (0,)


def test_lenient_server_records_without_refusing(mat: Material) -> None:
    with run_server(mat.server_cert, mat.server_key, strict=False) as srv:
        result = _connect(srv.port, mat, raw_extension_data=b"\x00")
        (record,) = srv.wait_for_records(1)
    assert result.accepted
    assert record.client_name == b""


def test_verify_callback_decides(mat: Material) -> None:
    seen: list[bytes | None] = []

    def verify(record: object) -> bool:
        name = getattr(record, "client_name", None)
        seen.append(name)
        return name == b"allowed.example.com"

    with run_server(mat.server_cert, mat.server_key, verify=verify) as srv:
        refused = _connect(srv.port, mat)
        allowed = _connect(srv.port, mat, client_name="allowed.example.com")
        records = srv.wait_for_records(2)
    assert refused.alert == "handshake_failure" and not refused.accepted
    assert allowed.accepted
    assert seen == [NAME.encode(), b"allowed.example.com"]
    assert [r.accepted for r in records] == [False, True]


def test_client_reports_a_refusal_without_alert(mat: Material) -> None:
    # A server that completes the TCP connection and closes at once: an error, not acceptance.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def close_one() -> None:
            conn, _ = listener.accept()
            conn.close()

        thread = threading.Thread(target=close_one)
        thread.start()
        result = _connect(port, mat)
        thread.join(5)
    assert not result.accepted and not result.handshake_ok
    assert result.alert is None and result.error


def test_handshake_then_silent_close_is_not_acceptance(mat: Material, tmp_path: Path) -> None:
    # A (stdlib ssl) server that completes the handshake, then closes without a reply.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        _write_pem(tmp_path, "s.crt", mat.server_cert),
        _write_pem(tmp_path, "s.key", mat.server_key, private=True),
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve_one() -> None:
            conn, _ = listener.accept()
            with (
                context.wrap_socket(conn, server_side=True) as tls,
                contextlib.suppress(ssl.SSLError, OSError),  # the client writes after our close
            ):
                tls.unwrap()

        thread = threading.Thread(target=serve_one)
        thread.start()
        result = _connect(port, mat)
        thread.join(5)
    assert result.handshake_ok
    assert not result.accepted and result.reply == b"" and result.alert is None
    assert result.error


def test_stop_leaves_no_threads_even_with_a_stalled_client(mat: Material) -> None:
    before = _peer_threads()
    srv = run_server(mat.server_cert, mat.server_key, timeout=30)
    with socket.create_connection(("127.0.0.1", srv.port)):  # never sends a ClientHello
        deadline = time.monotonic() + 5
        while len(_peer_threads()) < len(before) + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_peer_threads()) == len(before) + 2  # acceptor + the stalled connection
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 10
    assert _peer_threads() == before
    (record,) = srv.records
    assert not record.handshake_ok and record.error
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


# --------------------------------------------------------------------------- against OpenSSL


def _write_pem(directory: Path, name: str, data: bytes, *, private: bool = False) -> Path:
    path = directory / name
    if private:
        path.touch(mode=0o600)
    path.write_bytes(data)
    return path


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"openssl exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("openssl s_server did not listen")


@pytest.fixture
def s_server(tmp_path: Path, mat: Material) -> Iterator[object]:
    """Start ``openssl s_server -tls1_3 -rev`` with extra options; stop it afterwards."""
    openssl = require_binary("openssl")
    procs: list[subprocess.Popen[bytes]] = []
    cert = _write_pem(tmp_path, "server.crt", mat.server_cert)
    key = _write_pem(tmp_path, "server.key", mat.server_key, private=True)

    def start(*extra: str) -> int:
        port = free_port()
        proc = subprocess.Popen(
            [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-tls1_3", "-rev",
             "-cert", str(cert), "-key", str(key), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        _wait_listening(port, proc)
        return port

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_client_against_openssl_server_without_the_extension(
    s_server: object, mat: Material
) -> None:
    port = s_server("-verify", "1")  # type: ignore[operator]
    result = _connect(port, mat)
    assert result.accepted, result
    assert result.reply == b"gnip\n"  # -rev: the line comes back reversed
    assert not result.server_requested_extension
    assert result.sent_extension_data is None


@pytest.mark.integration
def test_client_sees_the_alert_of_an_openssl_server_that_refuses(
    s_server: object, mat: Material, tmp_path: Path
) -> None:
    ca = _write_pem(tmp_path, "other-ca.crt", mat.other_ca)
    port = s_server(  # type: ignore[operator]
        "-Verify", "1", "-verify_return_error", "-verifyCAfile", str(ca)
    )
    result = _connect(port, mat)
    assert not result.accepted
    assert result.alert is not None and result.alert_code is not None, result
    assert result.reply == b""


@pytest.mark.integration
def test_openssl_decodes_the_extension_in_the_first_certificate_entry(
    s_server: object, mat: Material, tmp_path: Path
) -> None:
    # OpenSSL's -trace decoder is an independent reading of the client Certificate message.
    # s_server cannot request dane_clientid, so the client is forced to send it (TC-P15 case).
    trace = tmp_path / "trace.txt"
    port = s_server("-verify", "1", "-trace", "-msgfile", str(trace))  # type: ignore[operator]
    _connect(port, mat, force_extension=True, cert_pem=mat.chain_pem, key_pem=mat.chain_key)
    deadline = time.monotonic() + 5
    text = ""
    while text.count("CertificateVerify") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        text = trace.read_text(errors="replace")
    certificate = text[text.rindex("Certificate, Length=") :]  # the client's (received last)
    certificate = certificate[: certificate.index("CertificateVerify")]
    # Two ASN.1Cert entries; the extension block follows the first one only.
    assert certificate.count("ASN.1Cert, length=") == 2
    first, second = certificate.split("ASN.1Cert, length=")[1:]
    assert f"extension_type=UNKNOWN({DEFAULT_CODEPOINT}), length=28" in first
    assert "0000 - 1b 73 65 6e 73 6f 72 37" in first  # TV-EXT-2: 1b "sensor7"...
    assert "UNKNOWN(" not in second


def _s_client(
    openssl: str, port: int, tmp_path: Path, mat: Material, *, with_cert: bool = True
) -> subprocess.CompletedProcess[bytes]:
    cmd = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-quiet",
           "-trace", "-msgfile", str(tmp_path / "client-trace.txt")]  # fmt: skip
    if with_cert:
        cert = _write_pem(tmp_path, "client.crt", mat.client_cert)
        key = _write_pem(tmp_path, "client.key", mat.client_key, private=True)
        cmd += ["-cert", str(cert), "-key", str(key)]
    return subprocess.run(cmd, input=b"hello\n", capture_output=True, timeout=30, check=False)


@pytest.mark.integration
def test_openssl_client_sends_no_extension(
    server: PeerServer, mat: Material, tmp_path: Path
) -> None:
    openssl = require_binary("openssl")
    done = _s_client(openssl, server.port, tmp_path, mat)
    (record,) = server.wait_for_records(1)
    assert record.accepted, record
    assert record.client_name is None and record.extension_data is None
    assert record.chain == [mat.client_der]
    assert record.received == b"hello\n"
    assert b"hello" in done.stdout
    # OpenSSL decodes our CertificateRequest: the zero-length ClientName of TV-EXT-1.
    trace = (tmp_path / "client-trace.txt").read_text(errors="replace")
    request = trace[trace.index("CertificateRequest") :]
    assert f"extension_type=UNKNOWN({DEFAULT_CODEPOINT}), length=1" in request
    assert "0000 - 00 " in request[request.index(f"UNKNOWN({DEFAULT_CODEPOINT})") :]


@pytest.mark.integration
def test_openssl_client_without_certificate_is_refused(
    server: PeerServer, mat: Material, tmp_path: Path
) -> None:
    openssl = require_binary("openssl")
    _s_client(openssl, server.port, tmp_path, mat, with_cert=False)
    (record,) = server.wait_for_records(1)
    assert not record.accepted
    assert record.alert_sent == "certificate_required"
    assert record.chain == [] and record.received == b""
