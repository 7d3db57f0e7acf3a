"""DANE authentication of the server by `dance connect --server-auth dane` (RFC 6698/7671): the
DNSSEC-validated TLSA records at _PORT._tcp.NAME decide, with no fallback; and interop with
`openssl s_client -dane_tlsa_*` against dance's server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from dance.cli import main
from dance.testkit import Fault
from dance.tlsa import make_record
from tests.conftest import require_binary
from tests.tls.common import DEVICE, World, make_world
from tests.tls.test_cli_tls import LoopThread

SERVER = "srv.example.test"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("tls-server-dane"))


@pytest.fixture(scope="module")
def echo(world: World) -> Iterator[LoopThread]:
    with LoopThread(world) as srv:
        yield srv


def _publish(world: World, port: int, *records: str) -> str:
    zone = world.zones.get("example.test.")
    owner = f"_{port}._tcp.{SERVER}."
    zone.remove(owner, "TLSA")
    for record in records:
        zone.add(owner, "TLSA", record)
    world.resign()
    return owner


def _server_cert(world: World) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(world.server.cert).read_bytes())


def _connect(world: World, port: int, policy: str, *extra: str) -> list[str]:
    anchor = world.dir / "anchor.txt"
    anchor.write_text(world.zones.export_trust_anchor())
    return [
        "connect", f"127.0.0.1:{port}", "--name", DEVICE, "--cert", world.device.cert,
        "--key", world.device.key, "--server-name", SERVER, "--server-auth", policy,
        "--dns-server", f"{world.dns[0]}:{world.dns[1]}", "--trust-anchor", str(anchor), *extra,
    ]  # fmt: skip


def test_dane_ee_accepts_the_published_key_and_refuses_another(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = _server_cert(world)
    _publish(world, echo.port, make_record(cert, 3, 1, 1).to_text())
    assert main(_connect(world, echo.port, "dane")) == 0
    out = capsys.readouterr().out
    assert out.startswith("accepted:") and f"hello {DEVICE}" in out
    # a record for another key: refused before anything is sent, no PKIX fallback
    other = x509.load_pem_x509_certificate(Path(world.other.cert).read_bytes())
    _publish(world, echo.port, make_record(other, 3, 1, 1).to_text())
    assert main(_connect(world, echo.port, "dane", "--cafile", world.ca)) == 1
    out = capsys.readouterr().out
    assert out.startswith("server not authenticated: no-match") and "hello" not in out


def test_dane_ta_checks_the_name(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server CA as DANE-TA (2 0 0): the certificate names only localhost, not the server."""
    ca = x509.load_pem_x509_certificate(Path(world.ca).read_bytes())
    _publish(world, echo.port, make_record(ca, 2, 0, 0).to_text())  # the anchor in DNS
    assert main(_connect(world, echo.port, "dane")) == 1
    assert "server not authenticated: name-mismatch" in capsys.readouterr().out


def test_absent_insecure_and_bogus_answers(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish(world, echo.port)  # no TLSA at all (proved absent)
    assert main(_connect(world, echo.port, "dane")) == 1
    assert "no usable TLSA records" in capsys.readouterr().out
    # dane-or-pkix: provably no records, so the CA decides: the certificate is the CA's, but it
    # names localhost, not srv.example.test, so PKIX refuses the handshake
    assert main(_connect(world, echo.port, "dane-or-pkix", "--cafile", world.ca)) == 3
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out
    # bogus: never a fallback
    cert = _server_cert(world)
    owner = _publish(world, echo.port, make_record(cert, 3, 1, 1).to_text())
    with world.zones.inject(Fault("bad-signature", owner)):
        code = main(_connect(world, echo.port, "dane-or-pkix", "--cafile", world.ca))
    assert code == 1 and "bogus" in capsys.readouterr().out


def test_openssl_s_client_verifies_dances_server_by_dane(world: World, echo: LoopThread) -> None:
    openssl = require_binary("openssl")
    rrdata = make_record(_server_cert(world), 3, 1, 1).to_text()
    out = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{echo.port}", "-tls1_3",
         "-dane_tlsa_domain", SERVER, "-dane_tlsa_rrdata", rrdata, "-verify_return_error",
         "-dane_ee_no_namechecks",  # RFC 7671 5.1: DANE-EE has no name checks
         "-cert", world.device.cert, "-key", world.device.key],
        input=b"", capture_output=True, timeout=30,
    )  # fmt: skip
    text = out.stdout.decode(errors="replace")
    assert "Verification: OK" in text, text[-2000:]
    assert "DANE TLSA 3 1 1" in text and "matched EE certificate" in text
    wrong = "3 1 1 " + "00" * 32
    bad = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{echo.port}", "-tls1_3",
         "-dane_tlsa_domain", SERVER, "-dane_tlsa_rrdata", wrong, "-verify_return_error"],
        input=b"", capture_output=True, timeout=30,
    )  # fmt: skip
    assert b"Verification: OK" not in bad.stdout


def test_ldns_dane_verifies_dances_server(world: World, echo: LoopThread, tmp_path: Path) -> None:
    """ldns-dane (ldnsutils) checks dance's server against TLSA records: the right one passes, a
    wrong one fails (-d: the records are taken as DNSSEC-valid; -n: no name check, RFC 7671 5.1)."""
    ldns_dane = require_binary("ldns-dane")
    owner = f"_{echo.port}._tcp.{SERVER}."

    def verify(record: str) -> subprocess.CompletedProcess[str]:
        tlsa = tmp_path / "tlsa.txt"
        tlsa.write_text(f"{owner} 300 IN TLSA {record}\n")
        return subprocess.run(
            [ldns_dane, "-d", "-n", "-a", "127.0.0.1", "-t", str(tlsa), "verify"],  # -n: DANE-EE
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    good = verify(make_record(_server_cert(world), 3, 1, 1).to_text())
    assert good.returncode == 0, good.stdout + good.stderr
    assert "dane-validated successfully" in good.stdout + good.stderr
    bad = verify("3 1 1 " + "00" * 32)
    assert bad.returncode != 0 and "dane-validated successfully" not in bad.stdout + bad.stderr


def test_dance_connect_authenticates_nginx_by_its_published_key(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nginx (a self-signed certificate, no CA) whose key is published as 3 1 1: `dance connect
    --server-auth dane` accepts it and gets the backend's answer; a wrong record refuses it."""
    from dance.testkit.frontends import echo_backend, nginx_conf, server_tls, start_nginx
    from dance.testkit.servers import free_port

    require_binary("nginx")
    tls = server_tls(tmp_path / "tls")
    nginx_cert = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    with echo_backend() as backend:
        port = free_port()
        conf = nginx_conf(tmp_path / "nginx", port, tls, agent_port=None, backend_port=backend)
        proc = start_nginx(tmp_path / "nginx", conf, port)
        try:
            _publish(world, port, make_record(nginx_cert, 3, 1, 1).to_text())
            assert main(_connect(world, port, "dane", "--http", "/")) == 0
            out = capsys.readouterr().out
            assert out.startswith("accepted:") and "HTTP/1.1 200" in out
            _publish(world, port, make_record(_server_cert(world), 3, 1, 1).to_text())
            assert main(_connect(world, port, "dane", "--http", "/")) == 1
            assert "server not authenticated: no-match" in capsys.readouterr().out
        finally:
            proc.stop()


def test_library_connect_with_a_dane_check(world: World, echo: LoopThread) -> None:
    """`dance.tls.connect(..., server_check=dane_check(...))`: the published key connects, another
    key raises ServerRejected and nothing is sent."""
    import asyncio

    from dance.tls import ServerRejected, connect
    from dance.tls.dane import dane_check

    good = [make_record(_server_cert(world), 3, 1, 1).to_wire()]
    bad = [bytes.fromhex("030101" + "00" * 32)]

    async def run(records: list[bytes]) -> bytes:
        reader, writer = await connect(
            "127.0.0.1", echo.port, name=DEVICE, cert=world.device.cert, key=world.device.key,
            verify_server=False, server_hostname=SERVER,
            server_check=dane_check(SERVER, echo.port, records),
        )  # fmt: skip
        try:
            return await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()

    assert asyncio.run(run(good)) == f"hello {DEVICE}\n".encode()
    with pytest.raises(ServerRejected, match="no-match"):
        asyncio.run(run(bad))


def _default(world: World, port: int, *extra: str) -> list[str]:
    """`dance connect` without --server-auth: the default policy."""
    argv = _connect(world, port, "dane-or-pkix", *extra)
    i = argv.index("--server-auth")
    return argv[:i] + argv[i + 2 :]


def test_default_policy_is_dane_or_pkix(
    world: World, echo: LoopThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --server-auth: DANE when the key is published (no CA given: only DANE can accept it),
    no fallback when another key is published, the CA when the name provably has none; an
    address without --server-name: the CA only (no name to look up)."""
    _publish(world, echo.port, make_record(_server_cert(world), 3, 1, 1).to_text())
    assert main(_default(world, echo.port)) == 0
    assert f"hello {DEVICE}" in capsys.readouterr().out
    other = x509.load_pem_x509_certificate(Path(world.other.cert).read_bytes())
    _publish(world, echo.port, make_record(other, 3, 1, 1).to_text())
    assert main(_default(world, echo.port, "--cafile", world.ca)) == 1
    assert capsys.readouterr().out.startswith("server not authenticated: no-match")
    _publish(world, echo.port)  # provably none: PKIX, whose name check refuses srv.example.test
    assert main(_default(world, echo.port, "--cafile", world.ca)) == 3
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out
    # DNS that does not answer: refused, never silently PKIX, with a hint
    argv = _default(world, echo.port, "--cafile", world.ca)
    from dance.testkit.servers import free_port

    argv[argv.index("--dns-server") + 1] = f"127.0.0.1:{free_port()}"
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert out.startswith("server not authenticated") and "give --dns-server" in out
    # an address and no --server-name: PKIX (the certificate names localhost, not 127.0.0.1)
    argv = _default(world, echo.port, "--cafile", world.ca)
    i = argv.index("--server-name")
    assert main(argv[:i] + argv[i + 2 :]) == 3
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().out
