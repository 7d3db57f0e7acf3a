"""Proposed `make demo` step: SSH logins authorized by DNS names (architecture 4.1.11).

Offline (no sshd): what `dance ssh-keys-command` decides for keys offered to sshd. A names file
authorizes two DNS names for the account ``root``; their SSH keys are published as TLSA ``3 1 1``
(Ed25519) and ``3 1 0`` (ECDSA P-256) in a DNSSEC-signed testkit zone served on loopback.

    from dance.demo.ssh import run_ssh
    good &= run_ssh(out) == 0
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from dance.auth import Authenticator
from dance.identity import Identity, Result
from dance.ssh import AuthorizedNames, SSHKey, authorize, authorized_keys_line, ssh_key_to_spki
from dance.ssh import ssh_tlsa_record as tlsa

ALICE = "alice._user.example.test"
CAROL = "carol._user.example.test"
BOB = "bob._user.example.test"
NAMES_FILE = f"root: {ALICE}, {CAROL}\n"


def _ssh_key(private: PrivateKeyTypes) -> SSHKey:
    line = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    keytype, blob = line.decode("ascii").split()[:2]
    return ssh_key_to_spki(keytype, blob)


def _show(out: TextIO, label: str, key: SSHKey, result: Result, expect: bool) -> bool:
    if isinstance(result, Identity):
        line = authorized_keys_line(key, result.client_name)
        verdict = f"ACCEPTED  sshd gets: {line[:24]}... dance:{result.client_name}"
    else:
        verdict = f"REFUSED   {result.reason.value}  (nothing printed)"
    ok = result.accepted is expect
    out.write(f"  {'ok ' if ok else 'BAD'} {label:<44} {verdict}\n")
    return ok


def run_ssh(out: TextIO) -> int:
    """Print the scenario; 0 when every outcome is the expected one."""
    from dance.dns import TLSAResolver, TrustAnchors
    from dance.testkit import Fault, Hierarchy, ServerThread

    out.write("\ndance demo, part F: SSH logins authorized by DNS names\n\n")
    alice = _ssh_key(ed25519.Ed25519PrivateKey.generate())
    carol = _ssh_key(ec.generate_private_key(ec.SECP256R1()))
    bob = _ssh_key(ed25519.Ed25519PrivateKey.generate())
    stranger = _ssh_key(ed25519.Ed25519PrivateKey.generate())

    zones = Hierarchy("test.", ttl=60)
    zones.child("example.test.")
    users = zones.child("_user.example.test.")
    records = {ALICE: tlsa(alice), CAROL: tlsa(carol, 0), BOB: tlsa(bob)}
    for name, record in records.items():
        users.add(name + ".", "TLSA", record.to_text())
    zones.sign(algorithm=13, denial="nsec3")
    out.write("   /etc/dance/ssh-authorized-names:\n")
    out.write(f"     {NAMES_FILE}")
    out.write("   published with `dance ssh-tlsa --pubkey id.pub --name NAME`:\n")
    for name, record in records.items():
        text = record.to_zone_line(name, 60)
        out.write(f"     {text if len(text) < 96 else text[:92] + '...'}\n")
    out.write("\n")
    names = AuthorizedNames.parse(NAMES_FILE).names("root")
    anchors = TrustAnchors.from_text(zones.export_trust_anchor())

    with ServerThread(zones) as server:

        async def scenario() -> bool:
            async with TLSAResolver(
                server.address, anchors=anchors, recursion_desired=False
            ) as resolver:

                async def check(label: str, key: SSHKey, expect: bool) -> bool:
                    auth = Authenticator(resolver, allow=names)  # one per sshd invocation
                    result = await authorize(auth, "root", key.keytype, key, names)
                    return _show(out, label, key, result, expect)

                ok = await check("alice's Ed25519 key (3 1 1)", alice, True)
                ok &= await check("carol's ECDSA key (3 1 0)", carol, True)
                ok &= await check("a key published nowhere", stranger, False)
                ok &= await check("bob's key (published, not authorized)", bob, False)
                with zones.inject(Fault("bad-signature", ALICE + ".")):
                    resolver.flush()
                    ok &= await check("alice, forged answer (bad RRSIG)", alice, False)
                users.remove(ALICE + ".", "TLSA")
                zones.sign(algorithm=13, denial="nsec3")
                resolver.flush()
                ok &= await check("alice after her record was removed", alice, False)
                return ok

        good = asyncio.run(scenario())
    return 0 if good else 1
