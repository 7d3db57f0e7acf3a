"""The EAP-TLS verify daemon and hook: protocol, certificate naming, decisions, processes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from dance.certs import certificate_pem, generate_key, issue_certificate, new_ca, self_signed
from dance.eap.core import EapCertError, client_name_from_certificate
from dance.eap.protocol import (
    MAGIC,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    pem_body,
)
from tests.eap.common import ALLOW, NOW, OK1, DaemonThread, World

BIN = Path(sys.executable).parent
HOOK = str(BIN / "dance-eap-verify")
DANCE = str(BIN / "dance")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _b64(cert: x509.Certificate) -> str:
    return base64.b64encode(_der(cert)).decode()


# -- protocol (no sockets) -------------------------------------------------------------------


def test_request_round_trip_and_refusals(world: World) -> None:
    cert = world.devices["ok"].certificate
    line = encode_request(OK1, _b64(cert))
    assert line.startswith(f"{MAGIC}\t{OK1}\t".encode())
    assert decode_request(line) == (OK1, _der(cert))
    assert decode_request(encode_request(None, _b64(cert))) == (None, _der(cert))
    good = _b64(cert)
    for bad in (
        f"{MAGIC}\t{OK1}\t{good}".encode(),  # no LF
        f"DANCE-EAP-VERIFY/2\t{OK1}\t{good}\n".encode(),  # other version
        f"{MAGIC}\t{good}\n".encode(),  # a field missing
        f"{MAGIC}\ta b\t{good}\n".encode(),  # space in the identity
        f"{MAGIC}\t{OK1}\t{good}\textra\n".encode(),  # a field too many
        f"{MAGIC}\t{OK1}\t{good[:-2]}\n".encode(),  # base64 cut short
        f"{MAGIC}\t{OK1}\t{good}\r\n".encode(),  # CR
        f"{MAGIC}\t\xe9\t{good}\n".encode("latin-1"),  # not ASCII
        f"{MAGIC}\t{OK1}\t{'A' * 40000}\n".encode(),  # too long
        f"{MAGIC}\t{OK1}\t====\n".encode(),  # empty certificate
    ):
        with pytest.raises(ProtocolError):
            decode_request(bad)
    with pytest.raises(ProtocolError):
        encode_request("a\tb", good)
    with pytest.raises(ProtocolError):
        encode_request("x" * 254, good)


def test_reply_round_trip_and_refusals() -> None:
    for kind, text in (("OK", OK1), ("NO", "no-match"), ("ERR", "internal-error")):
        assert decode_reply(encode_reply(kind, text)) == (kind, text)
    for bad in (b"OK\n", b"YES\tx\n", b"OK\tx", b"OK\tx\nNO\ty\n", b"OK\ta b\n", b"NO\t\xc3\xa9\n"):
        with pytest.raises(ProtocolError):
            decode_reply(bad)


@given(st.binary(max_size=300))
def test_decode_request_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_request(data)


def test_pem_body_takes_exactly_one_certificate(world: World) -> None:
    cert = world.devices["ok"].certificate
    pem = certificate_pem(cert).decode()
    assert base64.b64decode(pem_body(pem)) == _der(cert)
    for bad in (
        pem + pem,  # two certificates
        "",
        pem.replace("CERTIFICATE", "PRIVATE KEY"),
        "junk\n" + pem,  # something before
        pem.replace("\n-----END", "!!\n-----END"),  # not base64
    ):
        with pytest.raises(ProtocolError):
            pem_body(bad)


# -- the ClientName of a certificate ---------------------------------------------------------


def test_client_name_is_the_single_san_dnsname() -> None:
    key = generate_key()
    ca_key = generate_key()
    ca = new_ca(ca_key, "ca", now=NOW)
    one = issue_certificate(
        ca, ca_key, key.public_key(), dns_names=["Dev1._Device.Example.TEST"], now=NOW
    )
    assert client_name_from_certificate(one) == "dev1._device.example.test"
    two = issue_certificate(
        ca, ca_key, key.public_key(), dns_names=["a.example", "b.example"], now=NOW
    )
    with pytest.raises(EapCertError) as info:
        client_name_from_certificate(two)
    assert info.value.reason == "several-san-dnsnames"
    with pytest.raises(EapCertError) as info:
        client_name_from_certificate(ca)  # no SAN at all
    assert info.value.reason == "no-san-dnsname"
    mail = issue_certificate(
        ca, ca_key, key.public_key(), dns_names=["x.example"], now=NOW, mailbox="a@x.example"
    )
    assert client_name_from_certificate(mail) == "x.example"  # other SAN types do not count


# -- decisions through a daemon in this process ----------------------------------------------


def _ask(daemon: DaemonThread, line: bytes) -> bytes:
    fut = asyncio.run_coroutine_threadsafe(daemon.daemon.answer(line), daemon.loop)
    return fut.result(30)


def test_daemon_decisions_and_counters(world: World, tmp_path: Path) -> None:
    with DaemonThread(world, tmp_path / "s.sock") as daemon:
        ok = world.devices["ok"].certificate
        assert _ask(daemon, encode_request(OK1, _b64(ok))) == f"OK\t{OK1}\n".encode()
        assert _ask(daemon, encode_request(OK1.upper(), _b64(ok))) == f"OK\t{OK1}\n".encode()
        assert _ask(daemon, encode_request(None, _b64(ok))) == b"NO\tno-identity\n"
        expired = world.devices["expired"]
        line = encode_request(expired.name, _b64(expired.certificate))
        assert _ask(daemon, line) == b"NO\texpired\n"  # DANE-EE alone would ignore the dates
        stranger = self_signed(generate_key(), OK1, now=NOW)  # the right name, another key
        assert _ask(daemon, encode_request(OK1, _b64(stranger))) == b"NO\tno-match\n"
        garbage = base64.b64encode(b"\x30\x03\x02\x01\x00").decode()
        assert _ask(daemon, encode_request(OK1, garbage)) == b"NO\tmalformed-certificate\n"
        assert _ask(daemon, b"HELLO\n") == b"ERR\tmalformed-request\n"
        stats = daemon.daemon.stats
        assert stats.accepted == 2 and stats.requests == 7
        assert stats.reasons["no-identity"] == 1 and stats.reasons["no-match"] == 1
        assert stats.reasons["expired"] == 1
        assert stats.reasons["malformed-certificate"] == 1
        assert stats.errors == {"malformed-request": 1}


def test_anonymous_identity_when_configured(world: World, tmp_path: Path) -> None:
    with DaemonThread(world, tmp_path / "s.sock", require_identity=False) as daemon:
        ok = world.devices["ok"].certificate
        assert _ask(daemon, encode_request(None, _b64(ok))) == f"OK\t{OK1}\n".encode()
        # a given identity must still be the name
        assert _ask(daemon, encode_request("anonymous", _b64(ok))) == b"NO\tidentity-mismatch\n"


def _hook(*args: str, hook: str = HOOK) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hook, *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


@pytest.fixture(params=["python-hook", "c-hook"])
def hook(request: pytest.FixtureRequest) -> str:
    """The Python hook (dance-eap-verify) and the C one (dance eap-build-hook): same behaviour."""
    return HOOK if request.param == "python-hook" else str(request.getfixturevalue("c_hook"))


def test_hook_exit_status(world: World, tmp_path: Path, hook: str) -> None:
    _hook = functools.partial(globals()["_hook"], hook=hook)
    sock = tmp_path / "h.sock"
    ok = world.devices["ok"]
    with DaemonThread(world, sock):
        done = _hook("--socket", str(sock), "--identity", OK1, str(ok.cert))
        assert done.returncode == 0 and f"authenticated as {OK1}" in done.stderr
        done = _hook("--socket", str(sock), "--identity", "other.example", str(ok.cert))
        assert done.returncode == 1 and "refused: identity-mismatch" in done.stderr
        chain = tmp_path / "chain.pem"
        chain.write_bytes(ok.cert.read_bytes() * 2)
        done = _hook("--socket", str(sock), "--identity", OK1, str(chain))
        assert done.returncode == 1 and "not exactly one PEM certificate" in done.stderr
    done = _hook("--socket", str(sock), "--identity", OK1, str(ok.cert))  # no daemon: refused
    assert done.returncode == 1 and "no answer from the verify daemon" in done.stderr
    assert _hook(str(ok.cert)).returncode == 2  # no --socket
    assert "Traceback" not in done.stderr


def test_daemon_command_serves_flushes_and_stops(world: World, tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    proc = subprocess.Popen(
        [DANCE, "eap-verify-daemon", "--socket", str(sock), "--allow", ALLOW[0],
         "--server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor",
         str(world.dir / "anchor.txt"), "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
        ok = world.devices["ok"]
        done = _hook("--socket", str(sock), "--identity", OK1, str(ok.cert))
        assert done.returncode == 0, done.stderr
        legacy = world.devices["legacy"]  # outside this daemon's --allow
        done = _hook("--socket", str(sock), "--identity", legacy.name, str(legacy.cert))
        assert done.returncode == 1 and "not-allowed" in done.stderr
        # a client that sends garbage and one that sends nothing do not stop it
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"\x00" * 100 + b"\n")
            assert s.recv(100) == b"ERR\tmalformed-request\n"
        proc.send_signal(signal.SIGHUP)
        done = _hook("--socket", str(sock), "--identity", OK1, str(ok.cert))
        assert done.returncode == 0, done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "DNS cache flushed" in err and "Traceback" not in err
    assert "3 requests, 2 accepted, 1 refused" in err or "4 requests, 2 accepted, 1 refused" in err
    assert not sock.exists()


def _fake_daemon(path: Path, reply: bytes | None, hold: bool = False) -> threading.Thread:
    """A one-shot server at ``path`` that reads a request and answers ``reply`` (None: closes
    without an answer; ``hold``: never answers, waits until the client gives up)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        with srv:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(30)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                seen.append(data)
                if hold:
                    release.wait(60)  # set by the test once the hook has given up
                elif reply is not None:
                    conn.sendall(reply)

    seen: list[bytes] = []
    release = threading.Event()
    t = threading.Thread(target=serve, daemon=True)
    t.seen = seen  # type: ignore[attr-defined]
    t.release = release  # type: ignore[attr-defined]
    t.start()
    return t


@pytest.mark.parametrize(
    "reply",
    [
        None,  # the daemon closes without answering
        b"",
        b"OK\t" + OK1.encode(),  # no LF
        b"OK\t" + OK1.encode() + b"\nOK\tx\n",  # two lines
        b"OK " + OK1.encode() + b"\n",  # no TAB
        b"OK\t\n",  # empty name
        b"OK\tsensor one\n",  # a space in the field
        b"OK\x00\t" + OK1.encode() + b"\n",  # a NUL after the kind
        b"OKAY\t" + OK1.encode() + b"\n",
        b"ok\t" + OK1.encode() + b"\n",
        b"OK\t" + b"a" * 1100 + b"\n",  # too long
        b"OK\t\xc3\xa9\n",  # not ASCII
    ],
)
def test_hook_refuses_malformed_replies(
    world: World, tmp_path: Path, hook: str, reply: bytes | None
) -> None:
    sock = tmp_path / "f.sock"
    server = _fake_daemon(sock, reply)
    ok = world.devices["ok"]
    done = _hook("--socket", str(sock), "--identity", OK1, str(ok.cert), hook=hook)
    server.join(30)
    assert done.returncode == 1, done.stderr
    assert "authenticated" not in done.stderr and "Traceback" not in done.stderr
    # the request it sent is what the protocol says
    (request,) = server.seen  # type: ignore[attr-defined]
    assert decode_request(request) == (OK1, _der(ok.certificate))


def test_hook_gives_up_on_a_silent_daemon(world: World, tmp_path: Path, hook: str) -> None:
    """A daemon that accepts and never answers: the hook refuses on its own timeout (8 s),
    before FreeRADIUS's 10 s kill."""
    sock = tmp_path / "s.sock"
    server = _fake_daemon(sock, None, hold=True)
    ok = world.devices["ok"]
    start = time.monotonic()
    done = _hook("--socket", str(sock), "--identity", OK1, str(ok.cert), hook=hook)
    elapsed = time.monotonic() - start
    server.release.set()  # type: ignore[attr-defined]
    server.join(60)
    assert done.returncode != 0 and "authenticated" not in done.stderr
    assert elapsed >= 7.0  # it waited for the daemon (no upper bound asserted: loaded machine)
    assert "Traceback" not in done.stderr


def test_hook_sends_a_well_formed_request_and_accepts_ok(
    world: World, tmp_path: Path, hook: str
) -> None:
    sock = tmp_path / "g.sock"
    server = _fake_daemon(sock, b"OK\t" + OK1.encode() + b"\n")
    ok = world.devices["ok"]
    done = _hook("--socket", str(sock), "--identity", "", str(ok.cert), hook=hook)
    server.join(30)
    assert done.returncode == 0 and f"authenticated as {OK1}" in done.stderr
    (request,) = server.seen  # type: ignore[attr-defined]
    assert decode_request(request) == (None, _der(ok.certificate))  # "" = no identity


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage\n",
        b"x" * 70000,  # larger than any certificate file FreeRADIUS writes
        b"junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\ntrailer\n",
        b"-----BEGIN CERTIFICATE-----\nAA*A\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n",  # not a multiple of 4
        b"-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n",
        b"-----END CERTIFICATE-----\nAAAA\n-----BEGIN CERTIFICATE-----\n",  # reversed
        b"-----BEGIN CERTIFICATE-----\nAA\xc3\xa9A\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----\n",
        b"-----BEGIN CERTIFICATE-----\n" + b"QUFB" * 6000 + b"\n-----END CERTIFICATE-----\n",
    ],
)
def test_hook_refuses_malformed_certificate_files(
    tmp_path: Path, hook: str, content: bytes
) -> None:
    """Refused before any request: nothing listens at the socket, the reason is the file."""
    cert = tmp_path / "c.pem"
    cert.write_bytes(content)
    done = _hook("--socket", str(tmp_path / "none.sock"), str(cert), hook=hook)
    assert done.returncode == 1, done.stderr
    assert "no answer from the verify daemon" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--socket"],
        ["--socket", "/x"],  # no certificate file
        ["--socket", "/x", "a.pem", "b.pem"],
        ["--socket", "/x", "--verbose", "a.pem"],
        ["a.pem"],
    ],
)
def test_hook_usage_errors(hook: str, args: list[str]) -> None:
    assert _hook(*args, hook=hook).returncode == 2


def test_hook_refuses_bad_identities(world: World, tmp_path: Path, hook: str) -> None:
    ok = world.devices["ok"]
    for identity in ("two words", "x" * 254, "caf\u00e9"):
        done = _hook("--socket", str(tmp_path / "n.sock"), "--identity", identity, str(ok.cert),
                     hook=hook)  # fmt: skip
        assert done.returncode == 1 and "identity" in done.stderr, done.stderr


def test_build_hook_command(tmp_path: Path) -> None:
    from tests.conftest import require_binary

    require_binary("cc", "gcc")
    out = tmp_path / "bin" / "dance-eap-verify-c"
    out.parent.mkdir()
    done = subprocess.run(
        [DANCE, "eap-build-hook", "--output", str(out)], capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert os.stat(out).st_mode & 0o777 == 0o755
    assert subprocess.run([str(out)], capture_output=True, check=False).returncode == 2  # usage
    bad = subprocess.run(
        [DANCE, "eap-build-hook", "--output", str(tmp_path / "x"), "--cc", str(tmp_path / "no")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot build the hook" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["dance-eap-verify-c"]  # no temp left
