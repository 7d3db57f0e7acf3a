"""The zone directory: master files, signing keys, atomic persistence.

Layout of ``DIR``::

    DIR/<zone>.zone        master file of the unsigned records (zone-file format, absolute
                           names); rewritten atomically (temp file + rename) when the journal
                           is merged into it, and when the authority stops
    DIR/<zone>.journal     the changes made since (binary, append-only, fsync'ed before an
                           update is acknowledged); ``<zone>.journal.old`` while a merge runs
    DIR/keys/<zone>.key    signing keys and policy (JSON, PKCS#8 PEM keys), mode 0600,
                           directory 0700; created on first start (or by ``init``)

``<zone>`` is the zone name without the final dot (``example.test.zone``). Signatures, DNSKEY,
NSEC/NSEC3 and NSEC3PARAM are never stored: the authority signs online.

``DIR/.authority.lock`` is locked (``flock``) by the process that serves or initialises the
directory: keys are only created or loaded, and files only written, while it is held.
Temporary files of interrupted writes (``.<file>.XXXXXXXX.tmp``) are removed when the lock is
taken (:meth:`ZoneDir.remove_temp_files`).

Journal entries hold the complete new content of every name an update changed (an empty name
was deleted), so replaying an entry twice, or over a master file that already has it, gives
the same records: a crash at any point of a merge loses nothing. Each entry is framed
(magic, length, CRC-32); an incomplete or damaged last entry (a write cut short: never
acknowledged) is ignored, damage followed by more entries is an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO, cast

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.ttl
import dns.zone
from cryptography.hazmat.primitives import serialization
from dns.dnssectypes import DSDigest
from dns.rdtypes.ANY.TLSA import TLSA

from dance.authority.errors import AuthorityError
from dance.zone.signing import HashedName, hashed
from dance.zone.zones import PrivateKey, SigningKey, ZoneKeys, generate_private_key

__all__ = [
    "ALGORITHMS",
    "SIGNER_TYPES",
    "JournalError",
    "KeyPolicy",
    "Records",
    "ZoneDir",
    "format_records",
    "parse_records",
    "trust_anchor_text",
]

log = logging.getLogger(__name__)

Name = dns.name.Name
RdataType = dns.rdatatype.RdataType
Records = dict[Name, dict[RdataType, dns.rdataset.Rdataset]]
Denial = Literal["nsec", "nsec3"]

#: Algorithm names accepted by ``init`` -> DNSSEC algorithm numbers.
ALGORITHMS = {"ecdsa-p256": 13, "ed25519": 15}
#: Record types the signer owns: refused in master files and in updates.
SIGNER_TYPES = frozenset(
    {RdataType.RRSIG, RdataType.NSEC, RdataType.NSEC3, RdataType.NSEC3PARAM, RdataType.DNSKEY}
)


@dataclass(frozen=True)
class KeyPolicy:
    """How one zone is signed, and its keys (KSK + ZSK, or one CSK)."""

    algorithm: int
    denial: Denial
    keys: ZoneKeys
    nsec3_iterations: int = 0
    nsec3_salt: bytes = b""


def _pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _signing_key(pem: str, algorithm: int, ksk: bool) -> SigningKey:
    private = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    flags = 0x0100 | (0x0001 if ksk else 0)
    dnskey = dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=flags)  # type: ignore[arg-type]
    return SigningKey(private_key=cast(PrivateKey, private), dnskey=dnskey)


def zone_file_name(origin: Name) -> str:
    text = origin.to_text(omit_final_dot=True)
    if not text or "/" in text or text.startswith("."):
        raise AuthorityError("zone-name", f"unusable zone name {origin}")
    return text


def parse_records(text: str, origin: Name, source: str) -> Records:
    """Parse a master file into records; errors name the file and line.

    Files in the simple form this module writes (see :func:`_parse_simple`) are read by a
    fast path with the same result; anything else goes to dnspython's zone-file parser."""
    try:
        simple = _parse_simple(text, origin)
    except Exception:  # anything unusual: dnspython parses it (and reports errors)
        simple = None
    if simple is not None:
        return simple
    try:
        zone = dns.zone.from_text(
            text,
            origin=origin,
            relativize=False,
            filename=source,
            allow_include=False,
            check_origin=True,
        )
    except dns.exception.SyntaxError as exc:
        raise AuthorityError("zone-file", str(exc)) from None
    except (dns.exception.DNSException, ValueError) as exc:
        raise AuthorityError("zone-file", f"{source}: {exc}") from None
    records: Records = {}
    for name, rdataset in zone.iterate_rdatasets():
        owner = name if name.is_absolute() else name.derelativize(origin)
        rdtype = RdataType.make(rdataset.rdtype)
        if rdtype in SIGNER_TYPES:
            raise AuthorityError(
                "zone-file",
                f"{source}: {owner} {rdtype.name}: signer records do not belong in the master "
                "file (the authority signs online)",
            )
        if rdataset.rdclass != dns.rdataclass.IN:
            raise AuthorityError("zone-file", f"{source}: {owner}: only class IN is served")
        copy = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype)
        copy.update(rdataset)  # type: ignore[no-untyped-call]
        records.setdefault(owner, {})[rdtype] = copy
    return records


#: Characters that make a line more than "owner TTL IN TYPE RDATA" (comments, parentheses,
#: escapes): such a file goes to dnspython.
_NOT_SIMPLE = re.compile(r"[;()\\]")
_UINT8 = re.compile(r"^[0-9]{1,3}$")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
#: Types with node rules dnspython applies while reading (CNAME and other data), and types
#: refused in master files: such a file goes to dnspython, whose checks apply.
_NOT_SIMPLE_TYPES = SIGNER_TYPES | {RdataType.CNAME, RdataType.DNAME}
_MAX_TTL = 2**32 - 1


def _absolute_name(text: str) -> Name:
    """An absolute ASCII name without escapes, as ``dns.name.from_text`` reads it."""
    if text == ".":
        return dns.name.root
    labels = text[:-1].split(".")
    if "" in labels:
        raise ValueError("empty label")
    return HashedName([label.encode("ascii") for label in labels] + [b""])


def _parse_simple(text: str, origin: Name) -> Records | None:
    """The records of a master file made only of comment lines, ``$ORIGIN <absolute name>``,
    ``$TTL <seconds>`` and complete ``<absolute owner> <TTL> IN <TYPE> <RDATA>`` lines (the
    form :func:`format_records` writes), with the result dnspython's parser gives for it;
    ``None`` for any other file (and exceptions for bad data, which the caller leaves to
    dnspython to report). TLSA RDATA in the plain ``usage selector mtype hex`` form is built
    directly; other RDATA is parsed by ``dns.rdata.from_text`` as the zone-file parser does."""
    if not text.isascii() or "\r" in text:
        return None
    records: Records = {}
    current = origin
    tlsa = RdataType.TLSA
    depth = len(origin)
    origin_labels = [label.lower() for label in origin.labels]
    for line in text.split("\n"):
        if not line or line[0] == ";" or line.isspace():
            continue
        if line[0] in " \t" or _NOT_SIMPLE.search(line):
            return None  # an inherited owner, a comment, parentheses or escapes
        fields = line.split()
        if line[0] == "$":
            if len(fields) == 2 and fields[0] == "$ORIGIN" and fields[1].endswith("."):
                current = _absolute_name(fields[1])
                continue
            if len(fields) == 2 and fields[0] == "$TTL" and fields[1].isdigit():
                continue
            return None
        if len(fields) < 5 or any('"' in f for f in fields[:4]):
            return None
        owner_text, ttl_text, class_text, type_text = fields[:4]
        if not owner_text.endswith(".") or not ttl_text.isdigit() or class_text != "IN":
            return None
        ttl = int(ttl_text)
        if ttl > _MAX_TTL:
            return None
        owner = _absolute_name(owner_text)
        if [label.lower() for label in owner.labels[-depth:]] != origin_labels:
            return None  # not in the zone (dnspython skips such lines)
        rdtype = dns.rdatatype.from_text(type_text)
        if rdtype in _NOT_SIMPLE_TYPES:
            return None
        if (
            rdtype == tlsa
            and len(fields) == 8
            and all(_UINT8.match(f) for f in fields[4:7])
            and _HEX.match(fields[7])
        ):
            rd: dns.rdata.Rdata = TLSA(  # type: ignore[no-untyped-call]
                dns.rdataclass.IN, tlsa, int(fields[4]), int(fields[5]), int(fields[6]),
                bytes.fromhex(fields[7]),
            )  # fmt: skip
        else:
            rest = line.split(None, 4)[4]
            rd = dns.rdata.from_text(
                dns.rdataclass.IN, rdtype, rest, origin=current, relativize=False
            )
        node = records.get(owner)
        if node is None:
            node = records[owner] = {}
        rds = node.get(rdtype)
        if rds is None:
            rds = node[rdtype] = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype)
        rds.add(rd, ttl)
    apex = records.get(origin, {})
    if not apex.get(RdataType.SOA) or not apex.get(RdataType.NS):
        return None
    return records


def _node_text(owner: Name, node: dict[RdataType, dns.rdataset.Rdataset]) -> str:
    return "".join(
        node[t].to_text(owner) + "\n"
        for t in sorted(node, key=lambda t: (t != RdataType.SOA, int(t)))
        if len(node[t])
    )


_TextCache = dict[int, tuple[dict[RdataType, dns.rdataset.Rdataset], str]]


def format_records(records: Records, origin: Name, cache: _TextCache | None = None) -> str:
    """Master-file text (absolute names, apex first, then the records' order) for
    ``records``. ``cache`` maps node identity to text: the authority never modifies a node in
    place (updates copy the names they touch), so unchanged nodes reuse their text."""
    parts = [
        f"; zone {origin} served by dance authority (unsigned records; signed online)\n",
        f"$ORIGIN {origin}\n",
    ]
    fresh: _TextCache = {}
    apex = records[origin]
    body: list[str] = []
    for owner, node in records.items():
        entry = None if cache is None else cache.get(id(node))
        text = entry[1] if entry is not None and entry[0] is node else _node_text(owner, node)
        fresh[id(node)] = (node, text)
        if node is apex:
            parts.append(text)
        else:
            body.append(text)
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return "".join(parts + body)


# --------------------------------------------------------------------------- journal

_JOURNAL_MAGIC = b"DNJ1"
_ENTRY = struct.Struct("!4sII")  # magic, payload length, CRC-32 of the payload
_MAX_ENTRY = 256 * 1024 * 1024


class JournalError(AuthorityError):
    def __init__(self, message: str) -> None:
        super().__init__("journal", message)


def encode_entry(records: Records, names: Iterable[Name]) -> bytes:
    """One journal entry: for each of ``names`` its complete content in ``records`` (no
    RRsets: the name was deleted), as wire-format RRsets."""
    body: list[bytes] = []
    count = 0
    for name in names:
        count += 1
        wire = name.to_wire()
        assert wire is not None
        node = records.get(name, {})
        rrsets = [(t, rds) for t, rds in node.items() if len(rds)]
        body.append(wire)
        body.append(struct.pack("!H", len(rrsets)))
        for rdtype, rds in rrsets:
            rdatas = [rd.to_wire() for rd in rds]
            body.append(struct.pack("!HIH", rdtype, rds.ttl, len(rdatas)))
            for rd_wire in rdatas:
                assert rd_wire is not None
                body.append(struct.pack("!H", len(rd_wire)))
                body.append(rd_wire)
    payload = struct.pack("!I", count) + b"".join(body)
    return _ENTRY.pack(_JOURNAL_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_entry(payload: bytes) -> list[tuple[Name, dict[RdataType, dns.rdataset.Rdataset]]]:
    (count,) = struct.unpack_from("!I", payload)
    at = 4
    out = []
    for _ in range(count):
        name, used = dns.name.from_wire(payload, at)
        name = hashed(name)
        at += used
        (ntypes,) = struct.unpack_from("!H", payload, at)
        at += 2
        node: dict[RdataType, dns.rdataset.Rdataset] = {}
        for _ in range(ntypes):
            rdtype_value, ttl, nrd = struct.unpack_from("!HIH", payload, at)
            at += 8
            rdtype = RdataType.make(rdtype_value)
            if rdtype in SIGNER_TYPES or rdtype in node:
                raise ValueError(f"{rdtype.name} at {name}")
            rds = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype, ttl=ttl)
            for _ in range(nrd):
                (length,) = struct.unpack_from("!H", payload, at)
                at += 2
                if at + length > len(payload):
                    raise ValueError("record beyond the entry")
                rds.add(
                    dns.rdata.from_wire(dns.rdataclass.IN, rdtype, payload, at, length, None),
                    ttl,
                )
                at += length
            node[rdtype] = rds
        out.append((name, node))
    if at != len(payload):
        raise ValueError("trailing data in the entry")
    return out


def replay_journal(data: bytes, records: Records, origin: Name, source: str) -> tuple[int, int]:
    """Apply the entries of a journal's bytes to ``records`` (in place). Returns (entries
    applied, bytes of an incomplete or damaged last entry ignored)."""
    at = 0
    applied = 0
    while at < len(data):
        rest = len(data) - at
        if rest < _ENTRY.size:
            return applied, rest
        magic, length, crc = _ENTRY.unpack_from(data, at)
        end = at + _ENTRY.size + length
        damaged = magic != _JOURNAL_MAGIC or length > _MAX_ENTRY
        if not damaged and end > len(data):
            return applied, rest  # cut short
        payload = data[at + _ENTRY.size : end]
        if damaged or zlib.crc32(payload) != crc:
            if damaged or end < len(data):
                raise JournalError(f"{source}: damaged entry at byte {at} followed by more data")
            return applied, rest
        try:
            changes = _decode_entry(payload)
        except (ValueError, struct.error, dns.exception.DNSException) as exc:
            raise JournalError(f"{source}: bad entry at byte {at}: {exc}") from None
        for name, node in changes:
            if not name.is_subdomain(origin) or (name == origin and RdataType.SOA not in node):
                raise JournalError(f"{source}: entry at byte {at} changes {name} wrongly")
            if node:
                records[name] = node
            else:
                records.pop(name, None)
        applied += 1
        at = end
    return applied, 0


def trust_anchor_text(origin: Name, keys: ZoneKeys, ttl: int) -> str:
    """DS (SHA-256) and DNSKEY lines for the KSK: the format of ``dance --trust-anchor``
    (:class:`dance.dns.TrustAnchors`) and Unbound's ``trust-anchor-file``."""
    ds = dns.dnssec.make_ds(origin, keys.ksk.dnskey, DSDigest.SHA256)
    return (
        f"{origin.to_text()} {ttl} IN DS {ds.to_text()}\n"
        f"{origin.to_text()} {ttl} IN DNSKEY {keys.ksk.dnskey.to_text()}\n"
    )


def _write_atomic(path: Path, data: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


#: Temporary files made by :func:`_write_atomic` (``mkstemp`` adds 8 characters).
_TEMP_FILE = re.compile(r"^\.[^/]+\.(zone|key)\.[a-z0-9_]{8}\.tmp$")
LOCK_FILE = ".authority.lock"


class ZoneDir:
    """Access to a zone directory (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._text: dict[Name, _TextCache] = {}  # zone -> node identity -> master-file text
        self._journals: dict[Name, int] = {}  # zone -> open journal (append) descriptor
        self._journal_lock = threading.Lock()

    # ------------------------------------------------------------------ locking

    def lock(self) -> TextIO:
        """Take the directory's exclusive lock (non-blocking); close the returned handle to
        release it. ``AuthorityError [zone-dir-busy]`` when another process (or another
        :class:`Authority` of this process) holds it."""
        if not self.path.is_dir():
            raise AuthorityError("zone-dir", f"zone directory {self.path} does not exist")
        try:
            handle = (self.path / LOCK_FILE).open("a")
        except OSError as exc:
            raise AuthorityError("zone-dir", f"cannot open the lock file: {exc}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise AuthorityError(
                "zone-dir-busy", f"another dance authority is serving {self.path}"
            ) from None
        return handle

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        handle = self.lock()
        try:
            yield
        finally:
            handle.close()

    def remove_temp_files(self) -> list[Path]:
        """Delete the temporary files left by interrupted atomic writes (call with the lock
        held: a running writer's temporary file would be removed too)."""
        removed = []
        for directory in (self.path, self.key_dir):
            if not directory.is_dir():
                continue
            for entry in directory.iterdir():
                if _TEMP_FILE.match(entry.name) and entry.is_file() and not entry.is_symlink():
                    try:
                        entry.unlink()
                    except OSError as exc:
                        log.warning("cannot remove leftover temporary file %s: %s", entry, exc)
                        continue
                    log.warning("removed leftover temporary file %s (an interrupted write)", entry)
                    removed.append(entry)
        return removed

    @property
    def key_dir(self) -> Path:
        return self.path / "keys"

    def zone_path(self, origin: Name) -> Path:
        return self.path / f"{zone_file_name(origin)}.zone"

    def key_path(self, origin: Name) -> Path:
        return self.key_dir / f"{zone_file_name(origin)}.key"

    def zones(self) -> list[Name]:
        """Zones present (one ``<zone>.zone`` file each), sorted."""
        if not self.path.is_dir():
            raise AuthorityError("zone-dir", f"zone directory {self.path} does not exist")
        out = []
        for entry in sorted(self.path.glob("*.zone")):
            try:
                out.append(dns.name.from_text(entry.name[: -len(".zone")]))
            except dns.exception.DNSException:
                log.warning("ignoring %s: not a zone name", entry)
        return out

    def __iter__(self) -> Iterator[Name]:
        return iter(self.zones())

    # ---------------------------------------------------------------- records

    def read_records(self, origin: Name) -> Records:
        """The zone's records: the master file, then the journals (if any) replayed."""
        path = self.zone_path(origin)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthorityError("zone-file", f"cannot read {path}: {exc}") from None
        records = parse_records(text, origin, str(path))
        for journal in (self.old_journal_path(origin), self.journal_path(origin)):
            try:
                data = journal.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise JournalError(f"cannot read {journal}: {exc}") from None
            applied, ignored = replay_journal(data, records, origin, str(journal))
            log.info("replayed %d journal entries of %s from %s", applied, origin, journal)
            if ignored:
                log.warning(
                    "ignored the last %d bytes of %s: an entry cut short (never acknowledged)",
                    ignored,
                    journal,
                )
        return records

    def journal_path(self, origin: Name) -> Path:
        return self.path / f"{zone_file_name(origin)}.journal"

    def old_journal_path(self, origin: Name) -> Path:
        return self.path / f"{zone_file_name(origin)}.journal.old"

    def has_journal(self, origin: Name) -> bool:
        return self.journal_path(origin).exists() or self.old_journal_path(origin).exists()

    def append_journal(self, origin: Name, records: Records, names: Iterable[Name]) -> int:
        """Append the new content of ``names`` to the zone's journal and make it durable
        (fdatasync; the directory too when the journal is created). Returns the journal's
        size in bytes."""
        entry = encode_entry(records, names)
        with self._journal_lock:
            fd = self._journals.get(origin)
            if fd is None:
                path = self.journal_path(origin)
                created = not path.exists()
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._journals[origin] = fd
                if created:
                    _fsync_dir(self.path)
            size = os.fstat(fd).st_size
            try:
                view = memoryview(entry)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fdatasync(fd)
            except OSError:
                # not acknowledged: take the entry back, or the next one would follow a
                # damaged entry (refused at replay)
                try:
                    os.ftruncate(fd, size)
                    os.fdatasync(fd)
                except OSError:
                    log.error("cannot take back a failed journal write to %s", origin)
                self._close_journal(origin)
                raise
            return size + len(entry)

    def _close_journal(self, origin: Name) -> None:
        fd = self._journals.pop(origin, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def rotate_journal(self, origin: Name) -> bool:
        """Start a new journal, the current one becoming ``<zone>.journal.old`` (for a merge:
        :meth:`write_records` with ``drop="old"``). False when an old journal is still there
        (a merge that failed: the next one covers it)."""
        with self._journal_lock:
            self._close_journal(origin)
            old = self.old_journal_path(origin)
            if old.exists():
                return False
            try:
                os.replace(self.journal_path(origin), old)
            except FileNotFoundError:
                return True
            _fsync_dir(self.path)
            return True

    def write_records(self, origin: Name, records: Records, drop: str = "all") -> None:
        """Persist the master file atomically: write a temporary file, fsync, rename over the
        old one. The text of names unchanged since the last write is reused. Then the journals
        it covers are removed: ``drop="all"`` (every change is in ``records``; the caller holds
        off appends), ``"old"`` (only ``<zone>.journal.old``: appends made meanwhile stay)."""
        cache = dict(self._text.get(origin, {}))
        _write_atomic(self.zone_path(origin), format_records(records, origin, cache), 0o644)
        self._text[origin] = cache
        paths = [self.old_journal_path(origin)]
        if drop == "all":
            with self._journal_lock:
                self._close_journal(origin)
            paths.append(self.journal_path(origin))
        removed = False
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed = True
        if removed:
            _fsync_dir(self.path)

    def close_journals(self) -> None:
        with self._journal_lock:
            for origin in list(self._journals):
                self._close_journal(origin)

    # ------------------------------------------------------------------- keys

    def read_policy(self, origin: Name) -> KeyPolicy | None:
        path = self.key_path(origin)
        if not path.exists():
            return None
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise AuthorityError(
                "key-file", f"{path} is readable by others (mode {mode:o}); chmod 600 it"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            algorithm = int(data["algorithm"])
            denial = data.get("denial", "nsec")
            if denial not in ("nsec", "nsec3"):
                raise ValueError(f"denial {denial!r}")
            ksk = _signing_key(data["ksk"], algorithm, True)
            zsk = ksk if data.get("zsk") is None else _signing_key(data["zsk"], algorithm, False)
            return KeyPolicy(
                algorithm=algorithm,
                denial=denial,
                keys=ZoneKeys(ksk=ksk, zsk=zsk),
                nsec3_iterations=int(data.get("nsec3_iterations", 0)),
                nsec3_salt=bytes.fromhex(data.get("nsec3_salt", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuthorityError("key-file", f"cannot use signing keys {path}: {exc}") from None

    def create_policy(
        self, origin: Name, *, algorithm: int = 13, denial: Denial = "nsec", csk: bool = False
    ) -> KeyPolicy:
        """Generate and store new signing keys (0600) for ``origin``."""
        if algorithm not in ALGORITHMS.values():
            raise AuthorityError("key-file", f"unsupported DNSSEC algorithm {algorithm}")
        ksk_private = generate_private_key(algorithm)
        zsk_private = None if csk else generate_private_key(algorithm)
        data = {
            "zone": origin.to_text(),
            "algorithm": algorithm,
            "denial": denial,
            "nsec3_iterations": 0,
            "nsec3_salt": "",
            "ksk": _pem(ksk_private),
            "zsk": None if zsk_private is None else _pem(zsk_private),
        }
        self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.key_dir, 0o700)
        path = self.key_path(origin)
        _write_atomic(path, json.dumps(data, indent=2) + "\n", 0o600)
        log.info("created signing keys for %s in %s", origin, path)
        policy = self.read_policy(origin)
        assert policy is not None
        return policy

    def policy(self, origin: Name, *, algorithm: int = 13, denial: Denial = "nsec") -> KeyPolicy:
        """The zone's keys, created on first use."""
        existing = self.read_policy(origin)
        if existing is not None:
            return existing
        return self.create_policy(origin, algorithm=algorithm, denial=denial)

    # ------------------------------------------------------------------- init

    def init_zone(
        self,
        origin: Name,
        *,
        ttl: int = 300,
        ns_address: str = "127.0.0.1",
        algorithm: int = 13,
        denial: Denial = "nsec",
        negative_ttl: int = 60,
    ) -> KeyPolicy:
        """Create ``<zone>.zone`` (SOA, NS ns1.<zone>, its address) and its signing keys, with
        the directory's lock held (``zone-dir-busy`` while an authority serves it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.locked():
            self.remove_temp_files()
            return self._init_zone(
                origin,
                ttl=ttl,
                ns_address=ns_address,
                algorithm=algorithm,
                denial=denial,
                negative_ttl=negative_ttl,
            )

    def _init_zone(
        self,
        origin: Name,
        *,
        ttl: int,
        ns_address: str,
        algorithm: int,
        denial: Denial,
        negative_ttl: int,
    ) -> KeyPolicy:
        path = self.zone_path(origin)
        if path.exists():
            raise AuthorityError("zone-exists", f"{path} already exists")
        ns = dns.name.from_text("ns1", origin)
        rname = dns.name.from_text("hostmaster", origin)
        records: Records = {}

        def add(owner: Name, rdtype: str, text: str, rr_ttl: int = ttl) -> None:
            rtype = dns.rdatatype.from_text(rdtype)
            rd = dns.rdata.from_text(
                dns.rdataclass.IN, rtype, text, origin=origin, relativize=False
            )
            rds = records.setdefault(owner, {}).setdefault(
                rtype, dns.rdataset.Rdataset(dns.rdataclass.IN, rtype)
            )
            rds.add(rd, rr_ttl)

        add(origin, "SOA", f"{ns} {rname} 1 3600 900 604800 {negative_ttl}")
        add(origin, "NS", ns.to_text())
        add(ns, "AAAA" if ":" in ns_address else "A", ns_address)
        policy = self.read_policy(origin) or self.create_policy(
            origin, algorithm=algorithm, denial=denial
        )
        self.write_records(origin, records)
        return policy
