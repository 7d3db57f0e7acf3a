"""Integration: a real FreeRADIUS 3.2 (EAP-TLS) checks each client certificate through dance.

FreeRADIUS's ``verify { client = "HOOK --socket S --identity %{User-Name}
%{TLS-Client-Cert-Filename}" }`` asks the verify daemon, with HOOK either ``dance-eap-verify``
(Python) or the C hook (``dance eap-build-hook``): every test runs with both. ``eapol_test``
(wpa_supplicant's 802.1X test client) is the device. Every refusal is an Access-Reject, counted by
reason in the daemon, and FreeRADIUS keeps serving.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import dance.cli.eap_hook
from dance.testkit import Fault
from dance.testkit.eapol import EapolResult, FreeRadius, eapol_test
from dance.tlsa import make_record
from tests.conftest import require_binary
from tests.eap.common import BOGUS, OK1, TWO, D, DaemonThread, World

pytestmark = pytest.mark.integration

# what docs/eap.md recommends: the hook file run by an isolated interpreter without site (-I -S)
HOOK = [sys.executable, "-I", "-S", dance.cli.eap_hook.__file__]


@dataclass
class Rig:
    world: World
    radius: FreeRadius
    daemon: DaemonThread

    def auth(self, device: str, identity: str | None = None) -> EapolResult:
        dev = self.world.devices[device]
        return eapol_test(
            self.radius, identity=identity or dev.name, client_cert=dev.cert,
            client_key=dev.key, ca_cert=self.world.dir / "ca.pem", workdir=self.world.dir,
        )  # fmt: skip

    def reasons(self) -> dict[str, int]:
        return dict(self.daemon.daemon.stats.reasons)


def _verify(hook: list[str], sock: Path) -> list[str]:
    return [*hook, "--socket", str(sock), "--identity", "%{User-Name}",
            "%{TLS-Client-Cert-Filename}"]  # fmt: skip


@pytest.fixture(scope="module", params=["python-hook", "c-hook"])
def rig(
    request: pytest.FixtureRequest, world: World, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rig]:
    require_binary("freeradius", "radiusd")
    require_binary("eapol_test")
    hook = HOOK if request.param == "python-hook" else [str(request.getfixturevalue("c_hook"))]
    d = tmp_path_factory.mktemp("radius")
    sock = d / "eap.sock"
    with DaemonThread(world, sock) as daemon:
        radius = FreeRadius(
            d / "raddb", world.server_cert_pem, world.server_key_pem, world.ca_pem,
            verify_command=_verify(hook, sock),
        )  # fmt: skip
        with radius:
            yield Rig(world, radius, daemon)


def _accepted(result: EapolResult, rig: Rig) -> None:
    assert result.accepted, result.output[-3000:] + "\n---\n" + rig.radius.log_text()[-3000:]


def _refused(result: EapolResult, rig: Rig) -> None:
    assert not result.accepted and result.returncode != 0
    assert "SUCCESS" not in result.output.splitlines()[-1:]
    assert rig.radius.alive()


def test_published_device_is_accepted_with_its_name(rig: Rig) -> None:
    before = rig.daemon.daemon.stats.accepted
    result = rig.auth("ok")
    _accepted(result, rig)
    assert result.reply_user_name == OK1  # the Access-Accept names the authenticated device
    assert rig.daemon.daemon.stats.accepted == before + 1
    assert "passed external validation" in rig.radius.log_text()


@pytest.mark.parametrize(
    ("device", "identity", "reason"),
    [
        ("wrong", None, "no-match"),  # the name publishes another key
        ("outside", None, "not-allowed"),  # published, but outside the allow-list
        ("legacy", None, "dns-insecure"),  # allowed, published in an unsigned zone
        ("two", None, "several-san-dnsnames"),  # which name? refused, never the first one
        ("ok", "sensor9._device.example.test", "identity-mismatch"),  # another identity
    ],
)
def test_refusals_are_counted_by_reason(
    rig: Rig, device: str, identity: str | None, reason: str
) -> None:
    before = rig.reasons().get(reason, 0)
    _refused(rig.auth(device, identity), rig)
    assert rig.reasons().get(reason, 0) == before + 1, rig.reasons()
    assert "fails external verification" in rig.radius.log_text()


def test_outside_allow_list_makes_no_dns_query(rig: Rig) -> None:
    auth = rig.daemon.daemon.authenticator
    assert auth is not None
    lookups = auth.stats()["dns_lookups"]
    _refused(rig.auth("outside"), rig)
    assert auth.stats()["dns_lookups"] == lookups


def test_bogus_dns_is_refused(rig: Rig) -> None:
    before = rig.reasons().get("dns-bogus", 0)
    with rig.world.zones.inject(Fault("bad-signature", BOGUS)):
        _refused(rig.auth("bogus"), rig)
    assert rig.reasons().get("dns-bogus", 0) == before + 1
    rig.daemon.flush()
    _accepted(rig.auth("bogus"), rig)  # the fault gone (and the cache flushed): accepted


def test_removed_record_is_refused(rig: Rig) -> None:
    world = rig.world
    _accepted(rig.auth("removed"), rig)
    world.devices_zone.remove("sensor4", "TLSA")
    world.resign()
    try:
        _accepted(rig.auth("removed"), rig)  # cached for the record's TTL (the revocation bound)
        rig.daemon.flush()  # ... unless the operator flushes (SIGHUP)
        before = rig.reasons().get("dns-secure-absent", 0)
        _refused(rig.auth("removed"), rig)
        assert rig.reasons().get("dns-secure-absent", 0) == before + 1
    finally:
        cert = world.devices["removed"].certificate
        world.devices_zone.add("sensor4", "TLSA", make_record(cert).to_text())
        world.resign()
        rig.daemon.flush()


def test_expired_certificate_is_refused_by_freeradius_first(rig: Rig) -> None:
    """OpenSSL's chain check runs before the hook in FreeRADIUS 3.2: an expired certificate is
    refused there (the daemon never sees it; its own refusal is tested in test_daemon)."""
    requests = rig.daemon.daemon.stats.requests
    _refused(rig.auth("expired"), rig)
    assert "certificate has expired" in rig.radius.log_text()
    assert rig.daemon.daemon.stats.requests == requests


def test_freeradius_keeps_serving_after_refusals(rig: Rig) -> None:
    for device in ("wrong", "two", "outside"):
        _refused(rig.auth(device), rig)
    _accepted(rig.auth("ok"), rig)
    assert rig.radius.alive()


@pytest.mark.parametrize("kind", ["python-hook", "c-hook"])
def test_no_daemon_is_refused(
    kind: str, world: World, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Fail closed: the hook finds no daemon behind its socket, FreeRADIUS sends Access-Reject."""
    require_binary("freeradius", "radiusd")
    require_binary("eapol_test")
    hook = HOOK if kind == "python-hook" else [str(request.getfixturevalue("c_hook"))]
    radius = FreeRadius(
        tmp_path / "raddb", world.server_cert_pem, world.server_key_pem, world.ca_pem,
        verify_command=_verify(hook, tmp_path / "nobody.sock"),
    )  # fmt: skip
    with radius:
        dev = world.devices["ok"]
        result = eapol_test(
            radius, identity=dev.name, client_cert=dev.cert, client_key=dev.key,
            ca_cert=world.dir / "ca.pem", workdir=tmp_path,
        )  # fmt: skip
        assert not result.accepted and result.returncode != 0
        log = radius.log_text()
        assert "fails external verification" in log
        assert "no answer from the verify daemon" in log
        assert radius.alive()


PROBE = """\
import os
import radiusd

def authorize(p):
    with open(os.path.join(os.path.dirname(__file__), "seen.txt"), "a") as f:
        for k, v in p:
            f.write(f"{k}\\t{v}\\t{os.path.exists(v) if k.endswith('Filename') else ''}\\n")
    return radiusd.RLM_MODULE_OK
"""


def test_rlm_python3_in_check_eap_tls_sees_no_certificate(world: World, tmp_path: Path) -> None:
    """Why dance has no rlm_python3 path (docs/eap.md): in FreeRADIUS 3.2.1 the ``check-eap-tls``
    virtual server (the one place after the chain check) gets the certificate's names and dates
    but neither the certificate nor its key, and the ``verify`` temporary file is written only
    for the ``client`` command and unlinked when it returns. A DANE match needs the key."""
    require_binary("freeradius", "radiusd")
    require_binary("eapol_test")
    if not Path("/usr/lib/freeradius/rlm_python3.so").exists():
        require_binary("rlm_python3.so (Debian freeradius-python3)")
    (tmp_path / "probe.py").write_text(PROBE)
    radius = FreeRadius(
        tmp_path / "raddb", world.server_cert_pem, world.server_key_pem, world.ca_pem,
        verify_command=["/bin/true", "%{TLS-Client-Cert-Filename}"],
        tls_extra="            virtual_server = check-eap-tls",
        modules_extra=(
            f'    python3 {{\n        python_path = "{tmp_path}"\n        module = probe\n'
            "        mod_authorize = ${.module}\n        func_authorize = authorize\n    }\n"
        ),
        servers_extra=(
            "server check-eap-tls {\n    authorize {\n        python3\n"
            "        update config {\n            &Auth-Type := Accept\n        }\n    }\n}\n"
        ),
    )  # fmt: skip
    with radius:
        dev = world.devices["two"]
        result = eapol_test(
            radius, identity=dev.name, client_cert=dev.cert, client_key=dev.key,
            ca_cert=world.dir / "ca.pem", workdir=tmp_path,
        )  # fmt: skip
        assert result.accepted, radius.log_text()[-3000:]
    rows = [line.split("\t") for line in (tmp_path / "seen.txt").read_text().splitlines()]
    seen = {(k, v) for k, v, _ in rows}
    names = {k for k, _ in seen}
    # the module runs, with the certificate's names (both SAN dNSNames) ...
    assert ("TLS-Client-Cert-Subject-Alt-Name-Dns", TWO) in seen
    assert ("TLS-Client-Cert-Subject-Alt-Name-Dns", f"sensor7.{D}") in seen
    # ... but no certificate, no key, and no file to read
    pem = dev.cert.read_text()
    body = "".join(pem.splitlines()[1:-1])
    assert not any(body[:40] in v or "BEGIN CERTIFICATE" in v for _, v in seen)
    assert not any("Public-Key" in k or k.endswith(("-Der", "-Pem")) for k in names)
    assert all(exists != "True" for k, _, exists in rows if k.endswith("Filename"))
