"""A new DANCE identity: a private key (0600), a self-signed certificate or a CSR, and its record.

File layout in the output directory, named after the canonical client name::

    NAME.key   PKCS#8 PEM private key, created 0600 (never briefly world-readable)
    NAME.pem   self-signed certificate (DANE-EE ``3 1 1``), or the CA-issued chain
    NAME.csr   certificate signing request (``csr=True``: the manufacturer/integrator split)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from dance import certs
from dance.credentials import CertificateChain
from dance.identity import Rejection
from dance.names import InvalidName, parse_client_name
from dance.tlsa import TLSARecord, make_record, verify

__all__ = [
    "Identity",
    "IdentityError",
    "IdentityPaths",
    "load_private_key",
    "make_csr",
    "new_identity",
    "paths_for",
    "write_new_file",
]


class IdentityError(ValueError):
    """Bad input for an identity (name, key type, output directory). ``reason`` is stable."""

    def __init__(self, message: str, reason: str = "bad-input") -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class IdentityPaths:
    key: Path
    cert: Path
    csr: Path


def paths_for(name: str, out_dir: str | Path, *, suffix: str = "") -> IdentityPaths:
    base = Path(out_dir)
    return IdentityPaths(
        base / f"{name}{suffix}.key", base / f"{name}{suffix}.pem", base / f"{name}{suffix}.csr"
    )


@dataclasses.dataclass(frozen=True)
class Identity:
    name: str
    certificate: x509.Certificate | None
    record: TLSARecord
    key_path: Path
    cert_path: Path | None
    csr_path: Path | None = None
    key_type: str = "ec-p256"

    def zone_line(self, ttl: int = 300) -> str:
        return f"{self.name}. {ttl} IN TLSA {self.record.to_text()}"

    def to_dict(self, ttl: int = 300) -> dict[str, object]:
        return {
            "name": self.name,
            "key_type": self.key_type,
            "key": str(self.key_path),
            "certificate": str(self.cert_path) if self.cert_path else None,
            "csr": str(self.csr_path) if self.csr_path else None,
            "records": [
                {
                    "owner": self.name,
                    "ttl": ttl,
                    "rdata": self.record.to_text(),
                    "zone_line": self.zone_line(ttl),
                }
            ],
        }


def _canonical(name: str) -> str:
    try:
        return parse_client_name(name).text
    except InvalidName as exc:
        raise IdentityError(f"bad client name {name!r}: {exc}", "bad-name") from None


def write_new_file(path: Path, data: bytes, *, force: bool, mode: int = 0o644) -> None:
    """Create ``path`` with ``mode`` from the start; refuse to overwrite unless ``force``.

    Atomic: the data goes to a temporary file in the same directory (created with ``mode``,
    fsynced), which is then linked into place (``force=False``: fails if ``path`` exists) or
    renamed over it. A crash leaves either no file or the whole file, never a partial key.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror or exc}", "io") from None
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise IdentityError(f"{path} exists (use --force to overwrite)", "exists") from None
    except OSError as exc:
        raise IdentityError(f"cannot write {path}: {exc.strerror or exc}", "io") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def remove_stale_temp_files(directory: Path) -> int:
    """Remove the temporary files that interrupted runs of `write_new_file` left in
    ``directory`` (those whose writing process is gone); return how many."""
    removed = 0
    for tmp in directory.glob(".*.tmp-*-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue  # still running: not ours to remove
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def make_csr(key: CertificateIssuerPrivateKeyTypes, name: str) -> x509.CertificateSigningRequest:
    """A CSR with CN and SAN dNSName = the client name (signed by the key: proof of possession)."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algo)


def load_private_key(path: str | Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {path}: {exc.strerror or exc}", "io") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise IdentityError(f"{path}: not an unencrypted PEM private key", "bad-key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise IdentityError(f"{path}: unsupported key type", "bad-key")
    return key


def new_identity(
    name: str,
    out_dir: str | Path,
    *,
    key_type: certs.KeyKind = "ec-p256",
    now: datetime.datetime | None = None,
    csr: bool = False,
    force: bool = True,
    days: float = 365,
    suffix: str = "",
) -> Identity:
    """Generate a key and a self-signed certificate (or a CSR) for ``name``; check that the
    ``3 1 1`` record matches before anything is written. Keys are created 0600."""
    canonical = _canonical(name)
    if key_type not in certs.KEY_KINDS:
        raise IdentityError(
            f"unknown key type {key_type!r} (choose from {', '.join(certs.KEY_KINDS)})", "bad-key"
        )
    when = now or datetime.datetime.now(datetime.UTC)
    key = certs.generate_key(key_type)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create {out}: {exc.strerror or exc}", "io") from None
    paths = paths_for(canonical, out, suffix=suffix)
    if not force:
        for p in (paths.key, paths.csr if csr else paths.cert):
            if p.exists():
                raise IdentityError(f"{p} exists (use --force to overwrite)", "exists")
    record = make_record(key.public_key(), 3, 1, 1)
    if csr:
        request = make_csr(key, canonical)
        write_new_file(paths.key, certs.private_key_pem(key), force=force, mode=0o600)
        write_new_file(paths.csr, request.public_bytes(serialization.Encoding.PEM), force=force)
        return Identity(canonical, None, record, paths.key, None, paths.csr, key_type)
    cert = certs.self_signed(key, canonical, now=when, days=days)
    result = verify(canonical, CertificateChain.from_certificates([cert]), [record], now=when)
    if isinstance(result, Rejection):
        raise IdentityError(f"generated record does not match: {result.detail}", "internal")
    write_new_file(paths.key, certs.private_key_pem(key), force=force, mode=0o600)
    write_new_file(paths.cert, certs.certificate_pem(cert), force=force)
    return Identity(canonical, cert, record, paths.key, paths.cert, None, key_type)
