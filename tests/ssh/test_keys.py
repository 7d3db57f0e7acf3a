"""SSH public key -> SubjectPublicKeyInfo conversion, with hand-built vectors and bad input."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from dance.ssh import (
    SSHKeyError,
    authorized_keys_line,
    parse_public_key_line,
    ssh_key_to_spki,
    ssh_tlsa_record,
)
from tests.ssh.common import ssh_pub

# RFC 8032 section 7.1, TEST 1 public key
ED_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def sstr(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def mpint(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big")  # leading 0 keeps it positive
    return sstr(raw)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ED_BLOB = sstr(b"ssh-ed25519") + sstr(ED_PUB)


def test_ed25519_vector() -> None:
    key = ssh_key_to_spki("ssh-ed25519", b64(ED_BLOB))
    assert key.spki == bytes.fromhex("302a300506032b6570032100") + ED_PUB
    assert key.keytype == "ssh-ed25519" and key.blob == ED_BLOB
    assert ssh_key_to_spki("ssh-ed25519", ED_BLOB).spki == key.spki  # raw bytes too
    record = ssh_tlsa_record(key)
    assert record.to_text() == "3 1 1 " + hashlib.sha256(key.spki).hexdigest()
    assert ssh_tlsa_record(key, 0).data == key.spki
    assert ssh_tlsa_record(key, 2).data == hashlib.sha512(key.spki).digest()
    assert (
        authorized_keys_line(key, "a.example.com")
        == f"ssh-ed25519 {b64(ED_BLOB)} dance:a.example.com"
    )


@pytest.mark.parametrize(
    ("curve", "ident", "prefix"),
    [
        (ec.SECP256R1(), "nistp256", "3059301306072a8648ce3d020106082a8648ce3d030107034200"),
        (ec.SECP384R1(), "nistp384", "3076301006072a8648ce3d020106052b81040022036200"),
        (ec.SECP521R1(), "nistp521", "30819b301006072a8648ce3d020106052b8104002303818600"),
    ],
)
def test_ecdsa_vectors(curve: ec.EllipticCurve, ident: str, prefix: str) -> None:
    private = ec.generate_private_key(curve)
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    blob = sstr(f"ecdsa-sha2-{ident}".encode()) + sstr(ident.encode()) + sstr(point)
    key = ssh_key_to_spki(f"ecdsa-sha2-{ident}", b64(blob))
    assert key.spki == bytes.fromhex(prefix) + point  # prefix ends with BIT STRING, 0 unused
    assert ssh_pub(private)[1] == b64(blob)  # our hand-built blob is what OpenSSH encodes


def test_rsa_vector() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()
    blob = sstr(b"ssh-rsa") + mpint(numbers.e) + mpint(numbers.n)
    key = ssh_key_to_spki("ssh-rsa", b64(blob))
    assert key.spki == private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.spki[:4] == bytes.fromhex("30820122")  # SEQUENCE of 290 bytes for RSA-2048


def test_weak_rsa_refused() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(SSHKeyError) as info:
        ssh_key_to_spki(*ssh_pub(private))
    assert info.value.reason == "weak-key"


@pytest.mark.parametrize(
    ("keytype", "blob", "reason"),
    [
        ("ssh-ed25519", "not base64!", "malformed-key"),
        ("ssh-ed25519", "", "malformed-key"),
        ("ssh-ed25519", b64(b"\x00\x00"), "malformed-key"),
        ("ssh-ed25519", b64(ED_BLOB[:-1]), "malformed-key"),  # truncated
        ("ssh-ed25519", b64(ED_BLOB + b"\x00"), "malformed-key"),  # trailing data
        ("ssh-ed25519", b64(sstr(b"ssh-ed25519") + sstr(ED_PUB[:31])), "malformed-key"),
        ("ssh-ed25519", b64(b"\xff\xff\xff\xff" + ED_BLOB), "malformed-key"),  # huge length
        ("ssh-rsa", b64(ED_BLOB), "type-mismatch"),
        ("ecdsa-sha2-nistp256", b64(ED_BLOB), "type-mismatch"),
        (
            "ssh-ed25519-cert-v01@openssh.com",
            b64(sstr(b"ssh-ed25519-cert-v01@openssh.com") + sstr(b"x" * 32)),
            "unsupported-key-type",
        ),
        (
            "sk-ssh-ed25519@openssh.com",
            b64(sstr(b"sk-ssh-ed25519@openssh.com") + sstr(ED_PUB) + sstr(b"ssh:")),
            "unsupported-key-type",
        ),
        ("x", b64(sstr(b"x") + sstr(b"y")), "unsupported-key-type"),
        ("ssh-ed25519", "A" * 30000, "malformed-key"),  # too long
    ],
)
def test_bad_keys(keytype: str, blob: str, reason: str) -> None:
    with pytest.raises(SSHKeyError) as info:
        ssh_key_to_spki(keytype, blob)
    assert info.value.reason == reason


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_dsa_unsupported() -> None:
    private = dsa.generate_private_key(key_size=1024)
    keytype, blob = ssh_pub(private)
    with pytest.raises(SSHKeyError) as info:
        ssh_key_to_spki(keytype, blob)
    assert info.value.reason == "unsupported-key-type"


def test_ecdsa_curve_mismatch() -> None:
    """A nistp256 type whose curve field and point are P-384 is not a nistp256 key."""
    private = ec.generate_private_key(ec.SECP384R1())
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    blob = sstr(b"ecdsa-sha2-nistp256") + sstr(b"nistp384") + sstr(point)
    with pytest.raises(SSHKeyError) as info:
        ssh_key_to_spki("ecdsa-sha2-nistp256", b64(blob))
    assert info.value.reason == "malformed-key"


def test_ecdsa_point_not_on_curve() -> None:
    point = b"\x04" + b"\x01" * 64
    blob = sstr(b"ecdsa-sha2-nistp256") + sstr(b"nistp256") + sstr(point)
    with pytest.raises(SSHKeyError):
        ssh_key_to_spki("ecdsa-sha2-nistp256", b64(blob))


def test_keytype_none_skips_the_check() -> None:
    assert ssh_key_to_spki(None, b64(ED_BLOB)).keytype == "ssh-ed25519"


def test_public_key_line() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    keytype, blob = ssh_pub(private)
    key = parse_public_key_line(f"# comment\n\n{keytype} {blob} alice@laptop\n")
    assert key.base64 == blob
    for bad in ("", "# only a comment\n", "ssh-ed25519\n", f"ssh-rsa {blob}\n"):
        with pytest.raises(SSHKeyError):
            parse_public_key_line(bad)
