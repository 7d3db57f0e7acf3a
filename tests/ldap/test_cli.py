"""`dance ldap-proxy` as a process: a user binds through LDAPS and StartTLS to the real slapd,
malformed BER is counted in the metrics, SIGTERM stops it; bad options exit 2."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dance.ldap import messages as m
from dance.testkit.servers import free_port
from tests.ldap.client import context, ldaps, starttls
from tests.ldap.conftest import ALLOW, DOMAIN, Slapd, Users, user_dn
from tests.processes import dance_process

pytestmark = pytest.mark.integration


def _allow() -> list[str]:
    out: list[str] = []
    for name in ALLOW:
        out += ["--allow", name]
    return out


def _acceptable_ca_names(port: int) -> str:
    """What `openssl s_client` prints of the server's CertificateRequest (no client certificate:
    the handshake then fails, after the request was read)."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3"],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    return (done.stdout + done.stderr).decode(errors="replace")


def test_ldap_proxy_process(users: Users, slapd: Slapd, tmp_path: Path) -> None:
    metrics = free_port()
    user_ca = x509.load_pem_x509_certificates(Path(users.alice.cert).read_bytes())[1]
    hint = tmp_path / "user-ca.pem"
    hint.write_bytes(user_ca.public_bytes(serialization.Encoding.PEM))
    proc = dance_process(
        "ldap-proxy", "--listen", "127.0.0.1:0", "--listen-starttls", "127.0.0.1:0",
        "--ldapi", str(slapd.socket), "--cert", users.server.cert, "--key", users.server.key,
        *_allow(), "--server", f"{users.dns[0]}:{users.dns[1]}",
        "--trust-anchor", users.anchor_file, "--metrics", f"127.0.0.1:{metrics}", "--json",
        "--ca-hint", str(hint),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        where = json.loads(proc.stdout.readline())
        tls_port = int(where["ldaps"].rsplit(":", 1)[1])
        plain_port = int(where["starttls"].rsplit(":", 1)[1])
        # the user CA is named in the CertificateRequest (seed 4.1.3), from configuration
        printed = _acceptable_ca_names(tls_port)
        assert "Acceptable client certificate CA names" in printed, printed
        assert (
            user_ca.subject.rfc4514_string().replace(",", ", ") in printed.replace(",", ", ")
            or user_ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value in printed
        )

        async def main() -> tuple[str, str, bytes | None]:
            ctx = context(users, users.alice, f"_user.{DOMAIN}")
            out = []
            for client in (await ldaps(tls_port, ctx), await starttls(plain_port, ctx)):
                assert (await client.bind()).code == 0
                out.append(await client.whoami())
                await client.close()
            client = await ldaps(tls_port, ctx)
            assert (await client.bind()).code == 0
            await client.send(b"\x30\x80\x02\x01\x05")  # indefinite length
            notice = await client.read()
            await client.close()
            return out[0], out[1], notice

        first, second, notice = asyncio.run(main())
        assert first == second == f"dn:{user_dn('alice')}"
        assert notice is not None and m.decode_result(notice).message_id == 0
        url = f"http://127.0.0.1:{metrics}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "indefinite-length" in text, text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--listen", "127.0.0.1:0", "--max-pdu", "1"],
        ["--listen", "nowhere"],
        ["--listen", "127.0.0.1:0", "--ca-hint", "/nonexistent.pem"],
        ["--listen", "127.0.0.1:0", "--ca-hint", "/etc/hostname"],
    ],
    ids=["no-listener", "max-pdu", "listen", "ca-hint-missing", "ca-hint-not-pem"],
)
def test_bad_options_exit_2(users: Users, extra: list[str]) -> None:
    proc = dance_process(
        "ldap-proxy", "--ldapi", "/nonexistent", "--cert", users.server.cert,
        "--key", users.server.key, "--allow", "_user.example.test", *extra,
    )  # fmt: skip
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err
