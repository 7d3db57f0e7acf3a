"""SSH user authentication through DANCE (architecture-10 section 4.1.11, Example 11).

Authorization and authentication are kept apart:

* **authorization**: a names file maps local accounts to DNS owner names (ClientNames), e.g.
  ``/etc/dance/ssh-authorized-names``::

      # account: name, name, ...
      alice: alice._user.example.com
      deploy: ci1._device.example.com, ci2._device.example.com

  and, when the operator enables it, a per-user ``~/.ssh/authorized_dance_names`` (one name per
  line) that is honoured only when it and its directories are safe (sshd StrictModes rules).
  Names are exact: there are no suffixes or wildcards (an authorization file that granted a whole
  subtree would hand the decision to whoever controls that DNS subtree, silently).
* **authentication**: the key offered to sshd (``%t`` type and ``%k`` base64 blob of
  ``AuthorizedKeysCommand``) is converted to a SubjectPublicKeyInfo, presented as an RFC 7250 raw
  public key, and checked by `dance.auth.Authenticator` against the DNSSEC-validated TLSA RRset at
  each authorized name: the allow-list (the user's names) first, then the lookup, then RFC 7671
  matching, where a raw key matches only ``3 1 x`` records (``3 1 1`` recommended, ``3 1 0`` and
  ``3 1 2`` accepted).

Everything fails closed: a malformed key, an unsafe or malformed names file, an insecure, bogus or
unreachable zone, or a missing record never authorizes a key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import logging
import os
import pwd
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from dance.auth import Authenticator
from dance.credentials import RawPublicKey
from dance.identity import Identity, Reason, Rejection, Result
from dance.names import InvalidName, parse_client_name
from dance.tlsa import TLSARecord, make_record

__all__ = [
    "DEFAULT_NAMES_FILE",
    "KEY_TYPES",
    "USER_NAMES_FILE",
    "AuthorizedNames",
    "NamesFileError",
    "SSHKey",
    "SSHKeyError",
    "authorize",
    "authorized_keys_line",
    "check_path_safe",
    "names_for_user",
    "parse_public_key_line",
    "ssh_key_to_spki",
    "ssh_tlsa_record",
]

log = logging.getLogger(__name__)

DEFAULT_NAMES_FILE = "/etc/dance/ssh-authorized-names"
USER_NAMES_FILE = ".ssh/authorized_dance_names"  # relative to the user's home directory

#: SSH public key types that can be turned into a SubjectPublicKeyInfo.
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
MIN_RSA_BITS = 2048
MAX_BLOB_LENGTH = 16 * 1024  # an RSA-16384 key blob is about 2 KiB
MAX_NAMES_FILE = 1024 * 1024
MAX_NAMES_PER_USER = 64

_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,255}\$?\Z")
_CURVES = {
    "ecdsa-sha2-nistp256": ec.SECP256R1,
    "ecdsa-sha2-nistp384": ec.SECP384R1,
    "ecdsa-sha2-nistp521": ec.SECP521R1,
}


# --- keys ----------------------------------------------------------------------------------------


class SSHKeyError(ValueError):
    """An SSH public key that cannot be used. ``reason`` is a stable code:

    ``malformed-key`` (bad base64 or wire format, or not a key of the type it claims),
    ``type-mismatch`` (the blob's type differs from the type given with it),
    ``unsupported-key-type`` (certificates, FIDO ``sk-`` keys, DSA, unknown types),
    ``weak-key`` (RSA shorter than 2048 bits).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SSHKey:
    """An SSH public key and its SubjectPublicKeyInfo (DER)."""

    keytype: str
    blob: bytes
    spki: bytes

    @property
    def fingerprint(self) -> str:
        """The OpenSSH fingerprint, as sshd logs it: ``SHA256:`` + unpadded base64."""
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    @property
    def base64(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    def raw_public_key(self) -> RawPublicKey:
        return RawPublicKey(self.spki)


def _blob_type(blob: bytes) -> str:
    """The key type string that starts an SSH wire-format public key (RFC 4253 section 6.6)."""
    if len(blob) < 4:
        raise SSHKeyError("malformed-key", "key blob too short")
    length = int.from_bytes(blob[:4], "big")
    if length == 0 or length > 64 or 4 + length > len(blob):
        raise SSHKeyError("malformed-key", "bad key type field in the key blob")
    try:
        return blob[4 : 4 + length].decode("ascii")
    except UnicodeDecodeError:
        raise SSHKeyError("malformed-key", "key type is not ASCII") from None


def _decode_blob(blob: bytes | str) -> bytes:
    if isinstance(blob, bytes):
        return blob
    text = blob.strip()
    if len(text) > MAX_BLOB_LENGTH * 4 // 3 + 4:
        raise SSHKeyError("malformed-key", "key blob too long")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SSHKeyError("malformed-key", "key blob is not valid base64") from None


def ssh_key_to_spki(keytype: str | None, blob: bytes | str) -> SSHKey:
    """Convert an SSH public key (type and wire-format blob, raw or base64) to an `SSHKey`.

    ``keytype`` is what sshd passes as ``%t``; when given it must equal the type inside the blob
    (None skips that check). Raises `SSHKeyError`.
    """
    raw = _decode_blob(blob)
    if not raw:
        raise SSHKeyError("malformed-key", "empty key blob")
    if len(raw) > MAX_BLOB_LENGTH:
        raise SSHKeyError("malformed-key", "key blob too long")
    inner = _blob_type(raw)
    if keytype is not None and keytype != inner:
        raise SSHKeyError(
            "type-mismatch", f"key type {keytype!r} but the blob holds a {inner!r} key"
        )
    if inner not in KEY_TYPES:
        if "-cert-" in inner:
            what = "SSH certificates are not supported (publish the key itself)"
        elif inner.startswith("sk-"):
            what = "FIDO (sk-) keys have no SubjectPublicKeyInfo form and are not supported"
        else:
            what = f"unsupported SSH key type {inner!r}"
        raise SSHKeyError("unsupported-key-type", what)
    line = inner.encode("ascii") + b" " + base64.b64encode(raw)
    try:
        key = serialization.load_ssh_public_key(line)
    except (ValueError, TypeError) as exc:
        raise SSHKeyError("malformed-key", f"not a valid {inner} key: {exc}") from None
    except Exception as exc:  # cryptography may raise other types on odd input; fail closed
        raise SSHKeyError("malformed-key", f"not a valid {inner} key: {exc}") from None
    # The canonical re-encoding must give back the same blob: no trailing or odd data.
    canonical = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if base64.b64decode(canonical.split(b" ")[1]) != raw:
        raise SSHKeyError("malformed-key", "key blob is not in canonical form")
    if inner == "ssh-ed25519":
        ok = isinstance(key, ed25519.Ed25519PublicKey)
    elif inner == "ssh-rsa":
        ok = isinstance(key, rsa.RSAPublicKey)
        if ok and isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise SSHKeyError(
                "weak-key", f"RSA key of {key.key_size} bits (minimum {MIN_RSA_BITS})"
            )
    else:
        ok = isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES[inner])
    if not ok:
        raise SSHKeyError("malformed-key", f"the blob is not a {inner} key")
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SSHKey(inner, raw, spki)


def parse_public_key_line(text: str) -> SSHKey:
    """Read an OpenSSH public key line (``id_ed25519.pub``: ``type base64 [comment]``)."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise SSHKeyError("malformed-key", "expected 'TYPE BASE64 [COMMENT]'")
        return ssh_key_to_spki(parts[0], parts[1])
    raise SSHKeyError("malformed-key", "no public key found")


def ssh_tlsa_record(key: SSHKey, mtype: int = 1) -> TLSARecord:
    """The TLSA record to publish for an SSH key: ``3 1 mtype`` (DANE-EE, SPKI)."""
    if mtype not in (0, 1, 2):
        raise ValueError(f"unsupported matching type {mtype}")
    return make_record(key.spki, 3, 1, mtype)


def authorized_keys_line(key: SSHKey, name: str) -> str:
    """The line printed for sshd: ``TYPE BASE64 dance:NAME``."""
    return f"{key.keytype} {key.base64} dance:{name}"


# --- authorization: the names files -----------------------------------------------------------


class NamesFileError(ValueError):
    """A names file that cannot be used. ``reason``: ``unreadable``, ``unsafe``, ``malformed``.

    ``errors`` lists ``path:line: message`` strings for malformed files."""

    def __init__(self, reason: str, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.errors = tuple(errors)


def _parse_name(text: str) -> str:
    if text.startswith(".") or text.startswith("*"):
        raise ValueError(f"{text!r}: suffixes and wildcards are not allowed, list exact names")
    try:
        return parse_client_name(text).text
    except InvalidName as exc:
        raise ValueError(f"{text!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class AuthorizedNames:
    """Account -> authorized ClientNames (canonical text, in file order, no duplicates)."""

    users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def names(self, user: str) -> tuple[str, ...]:
        return self.users.get(user, ())

    @classmethod
    def parse(cls, text: str, source: str = "<names>") -> AuthorizedNames:
        """Parse ``account: name[, name...]`` lines; ``#`` starts a comment.

        An account may appear on several lines (the names add up). Raises `NamesFileError`
        (reason ``malformed``) listing every bad line as ``source:line: message``."""
        users: dict[str, list[str]] = {}
        errors: list[str] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            account, sep, rest = line.partition(":")
            account = account.strip()
            if not sep:
                errors.append(f"{source}:{number}: expected 'account: name[, name...]'")
                continue
            if not _USER_RE.match(account):
                errors.append(f"{source}:{number}: bad account name {account!r}")
                continue
            items = [item.strip() for item in rest.replace(",", " ").split()]
            if not items:
                errors.append(f"{source}:{number}: no names for {account!r}")
                continue
            names = users.setdefault(account, [])
            for item in items:
                try:
                    name = _parse_name(item)
                except ValueError as exc:
                    errors.append(f"{source}:{number}: {exc}")
                    continue
                if name not in names:
                    names.append(name)
        if errors:
            raise NamesFileError("malformed", f"{source}: {len(errors)} bad line(s)", errors)
        return cls({user: tuple(names) for user, names in users.items()})

    @classmethod
    def parse_user_file(cls, user: str, text: str, source: str = "<names>") -> AuthorizedNames:
        """Parse a per-user file: one name per line, ``#`` comments."""
        names: list[str] = []
        errors: list[str] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if len(line.split()) != 1:
                errors.append(f"{source}:{number}: expected one name per line")
                continue
            try:
                name = _parse_name(line)
            except ValueError as exc:
                errors.append(f"{source}:{number}: {exc}")
                continue
            if name not in names:
                names.append(name)
        if errors:
            raise NamesFileError("malformed", f"{source}: {len(errors)} bad line(s)", errors)
        return cls({user: tuple(names)} if names else {})

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check: bool = True) -> AuthorizedNames:
        """Read the system names file; with ``check`` it must be root-owned and safe."""
        text = _read_safe(Path(path), allowed_uids={0}, top=None, check=check)
        return cls.parse(text, str(path))


def check_path_safe(path: Path, allowed_uids: Iterable[int], top: Path | None = None) -> None:
    """Refuse a file that someone else could have written (like sshd's StrictModes).

    The file and each directory above it must be owned by one of ``allowed_uids`` and not be
    group- or world-writable; directories above ``top`` (e.g. the user's home) must be owned by
    root. A root-owned directory with the sticky bit (``/tmp``) is accepted: others cannot
    rename or replace entries they do not own. Raises `NamesFileError` (reason ``unsafe``)."""
    uids = set(allowed_uids)
    path = Path(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise NamesFileError("unreadable", f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise NamesFileError("unsafe", f"{path}: not a regular file")
    if st.st_uid not in uids:
        raise NamesFileError("unsafe", f"{path}: bad ownership (uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise NamesFileError("unsafe", f"{path}: group- or world-writable")
    above_top = top is None
    top_abs = Path(os.path.abspath(top)) if top is not None else None
    for directory in path.parents:
        try:
            dst = os.stat(directory)
        except OSError as exc:
            raise NamesFileError("unsafe", f"{directory}: {exc.strerror or exc}") from None
        owners = {0} if above_top else uids | {0}
        if dst.st_uid not in owners:
            raise NamesFileError("unsafe", f"{directory}: bad ownership (uid {dst.st_uid})")
        writable = dst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and not (dst.st_mode & stat.S_ISVTX and dst.st_uid == 0):
            raise NamesFileError("unsafe", f"{directory}: group- or world-writable")
        if top_abs is not None and directory == top_abs:
            above_top = True


def _read_safe(path: Path, *, allowed_uids: set[int], top: Path | None, check: bool) -> str:
    if check:
        check_path_safe(path, allowed_uids, top)
    try:
        nofollow = os.O_NOFOLLOW if check else 0
        fd = os.open(path, os.O_RDONLY | nofollow | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NamesFileError("unreadable", f"{path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        # the file opened is the file checked (no swap between the check and the open)
        if check and (
            not stat.S_ISREG(st.st_mode)
            or st.st_uid not in allowed_uids
            or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise NamesFileError("unsafe", f"{path}: changed while being checked")
        try:
            data = handle.read(MAX_NAMES_FILE + 1)
        except OSError as exc:
            raise NamesFileError("unreadable", f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_NAMES_FILE:
        raise NamesFileError("malformed", f"{path}: larger than {MAX_NAMES_FILE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NamesFileError("malformed", f"{path}: not UTF-8") from None


def names_for_user(
    user: str,
    *,
    names_file: str | os.PathLike[str] | None = DEFAULT_NAMES_FILE,
    user_files: bool = False,
    check: bool = True,
) -> tuple[str, ...]:
    """The ClientNames authorized for ``user`` from the system file and, if ``user_files``, the
    user's ``~/.ssh/authorized_dance_names``.

    A missing system file authorizes nobody; an unsafe or malformed one raises `NamesFileError`
    (the caller must fail closed). A missing, unsafe or malformed per-user file is logged and
    ignored (it can only grant, so ignoring it denies)."""
    if not _USER_RE.match(user):
        return ()
    names: list[str] = []
    if names_file is not None:
        if os.path.lexists(names_file):
            names.extend(AuthorizedNames.load(names_file, check=check).names(user))
        else:
            log.info("names file %s does not exist: no names from it", names_file)
    if user_files:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            entry = None
        if entry is not None and entry.pw_dir:
            home = Path(entry.pw_dir)
            path = home / USER_NAMES_FILE
            if os.path.lexists(path):
                try:
                    text = _read_safe(path, allowed_uids={0, entry.pw_uid}, top=home, check=check)
                    extra = AuthorizedNames.parse_user_file(user, text, str(path)).names(user)
                except NamesFileError as exc:
                    log.warning("ignoring %s: %s %s", path, exc, "; ".join(exc.errors))
                    extra = ()
                names.extend(n for n in extra if n not in names)
    if len(names) > MAX_NAMES_PER_USER:
        log.warning(
            "account %r has %d names; using the first %d", user, len(names), MAX_NAMES_PER_USER
        )
    return tuple(names[:MAX_NAMES_PER_USER])


# --- the decision ------------------------------------------------------------------------------


class _Rank(enum.IntEnum):
    """Which rejection to report when every name fails: the most telling one."""

    OTHER = 0
    NOT_ALLOWED = 1
    ABSENT = 2
    NO_MATCH = 3
    DNS = 4


def _rank(rejection: Rejection) -> _Rank:
    if rejection.reason in (Reason.DNS_BOGUS, Reason.DNS_INSECURE, Reason.DNS_INDETERMINATE):
        return _Rank.DNS
    if rejection.reason in (Reason.NO_MATCH, Reason.NO_USABLE_RECORDS):
        return _Rank.NO_MATCH
    if rejection.reason in (Reason.DNS_SECURE_ABSENT, Reason.NO_RECORDS):
        return _Rank.ABSENT
    if rejection.reason is Reason.NOT_ALLOWED:
        return _Rank.NOT_ALLOWED
    return _Rank.OTHER


async def authorize(
    authenticator: Authenticator,
    user: str,
    keytype: str | None,
    blob: bytes | str | SSHKey,
    names: Sequence[str],
) -> Result:
    """Decide whether the SSH key may log in as ``user``, whose authorized names are ``names``.

    The key authenticates if, for one of ``names``, ``authenticator.authenticate`` accepts it
    (its allow-list should be ``names``: the Authenticator refuses other names before any DNS
    query). The names are looked up concurrently; the first accepted name in ``names`` order
    wins. Never raises for bad input: returns a `Rejection` (``malformed-input`` for a bad key,
    ``not-allowed`` when ``user`` has no names)."""
    if isinstance(blob, SSHKey):
        key = blob
    else:
        try:
            key = ssh_key_to_spki(keytype, blob)
        except SSHKeyError as exc:
            log.debug("ssh key for %s refused: %s (%s)", user, exc.reason, exc)
            return Rejection(Reason.MALFORMED_INPUT, f"ssh key: {exc.reason}: {exc}")
    if not names:
        log.debug("no DANCE names are authorized for account %r", user)
        return Rejection(Reason.NOT_ALLOWED, f"no names authorized for account {user!r}")
    presented = key.raw_public_key()
    results = await asyncio.gather(*(authenticator.authenticate(n, presented) for n in names))
    best: Rejection | None = None
    for name, result in zip(names, results, strict=True):
        if isinstance(result, Identity):
            log.debug("ssh key %s accepted for %s as %s", key.fingerprint, user, result.identity)
            return result
        log.debug("ssh key %s for %s not accepted by %s: %s", key.fingerprint, user, name, result)
        if best is None or _rank(result) > _rank(best):
            best = result
    assert best is not None
    return best
