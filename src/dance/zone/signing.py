"""RRset signing without per-record object churn (RFC 4034 section 3.1.8.1).

:class:`RRsetSigner` signs RRsets for one key, signer name and validity window. The fixed part
of the RRSIG RDATA (expiration, inception, key tag, signer name in canonical form) is built
once; for each RRset the signature input is the canonical owner name, type, class and TTL
followed by the sorted canonical RDATA, assembled as bytes, and handed to ``cryptography``
with key objects prepared once. The resulting RRSIG records are made without dnspython's
per-field validation (their fields come from here), with a hash computed from their wire form
(cheap, and equal to dnspython's own hash for the same record).

The signature input doubles as the key of a signature cache (:class:`SignatureStore`): two
RRsets with the same input get the same signature, so a cache keyed by it can never return a
signature for different content.

Many signatures can be made in parallel, by this process and worker processes
(:func:`sign_parallel`): the private key travels to them as PKCS#8 bytes over a pipe, the
inputs and signatures as bytes.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from dns.dnssectypes import Algorithm
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.ANY.NSEC import NSEC
from dns.rdtypes.ANY.NSEC3 import NSEC3
from dns.rdtypes.ANY.RRSIG import RRSIG

__all__ = [
    "HashedName",
    "RRsetSigner",
    "SignatureStore",
    "canonical_wire",
    "hashed",
    "make_nsec",
    "make_nsec3",
    "make_rrset",
    "raw_signer",
    "sign_parallel",
]

log = logging.getLogger(__name__)

Name = dns.name.Name
RdataType = dns.rdatatype.RdataType
IN = dns.rdataclass.IN

_PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
_HEADER = struct.Struct("!HBBI")  # type covered, algorithm, labels, original TTL
_TAIL = struct.Struct("!IIH")  # expiration, inception, key tag
_RRFIXED = struct.Struct("!HHI")  # type, class, TTL
_RRSIG_FIELDS = struct.Struct("!HBBIIIH")
_setattr = object.__setattr__


class HashedName(dns.name.Name):
    """A name that computes its hash once (dnspython's, case-insensitive, so it finds and
    equals plain names in sets and dicts; dnspython computes it on every lookup)."""

    __slots__ = ("_hash",)

    def __init__(self, labels: Iterable[bytes | str]) -> None:
        super().__init__(labels)
        _setattr(self, "_hash", dns.name.Name.__hash__(self))

    def __hash__(self) -> int:
        try:
            return self._hash  # type: ignore[attr-defined,no-any-return]
        except AttributeError:  # (made without __init__, e.g. unpickled)
            return dns.name.Name.__hash__(self)

    def __eq__(self, other: object) -> bool:
        # what Name.__eq__ decides (same labels, ASCII case ignored; an absolute name ends
        # with the empty label, a relative one never has it), without its general comparison
        if self is other:
            return True
        if not isinstance(other, dns.name.Name):
            return False
        mine, theirs = self.labels, other.labels
        return len(mine) == len(theirs) and all(
            a == b or a.lower() == b.lower() for a, b in zip(mine, theirs, strict=True)
        )

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)


def hashed(name: Name) -> Name:
    """``name`` as a :class:`HashedName`."""
    return name if isinstance(name, HashedName) else HashedName(name.labels)


def canonical_wire(name: Name) -> bytes:
    """``name`` in canonical wire form (RFC 4034 section 6.2: ASCII letters lowercased)."""
    return b"".join(bytes((len(label),)) + label.lower() for label in name.labels)


class _RRSIG(RRSIG):
    """An RRSIG whose hash is computed once, from its canonical wire form (dnspython's hash
    renders the record each time; the value is the same)."""

    __slots__ = ("_hash",)

    def __hash__(self) -> int:
        try:
            return self._hash  # type: ignore[attr-defined,no-any-return]
        except AttributeError:  # (made by replace() or unpickled)
            return hash(
                _RRSIG_FIELDS.pack(
                    self.type_covered,
                    self.algorithm,
                    self.labels,
                    self.original_ttl,
                    self.expiration,
                    self.inception,
                    self.key_tag,
                )
                + canonical_wire(self.signer)
                + self.signature
            )


class _NSEC3(NSEC3):
    """An NSEC3 with a cheap hash (equal records have equal next hashes)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self.next)


class _NSEC(NSEC):
    """An NSEC with a cheap hash (equal records have equal next names)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self.next)


def _rdata(cls: type[dns.rdata.Rdata], rdtype: RdataType, **fields: object) -> dns.rdata.Rdata:
    """A record of ``cls`` with ``fields`` set directly (no validation: callers pass values of
    the right types and ranges)."""
    obj = cls.__new__(cls)
    _setattr(obj, "rdclass", IN)
    _setattr(obj, "rdtype", rdtype)
    _setattr(obj, "rdcomment", None)
    for attr, value in fields.items():
        _setattr(obj, attr, value)
    return obj


def make_nsec3(
    flags: int, iterations: int, salt: bytes, next_hash: bytes, windows: tuple[object, ...]
) -> NSEC3:
    """An NSEC3 record (hash algorithm 1, SHA-1)."""
    rd = _rdata(_NSEC3, RdataType.NSEC3, algorithm=1, flags=flags, iterations=iterations,
                salt=salt, next=next_hash, windows=windows)  # fmt: skip
    assert isinstance(rd, NSEC3)
    return rd


def make_nsec(next_name: Name, windows: tuple[object, ...]) -> NSEC:
    """An NSEC record."""
    rd = _rdata(_NSEC, RdataType.NSEC, next=next_name, windows=windows)
    assert isinstance(rd, NSEC)
    return rd


def make_rrset(
    name: Name,
    ttl: int,
    rdtype: RdataType,
    rdatas: Iterable[dns.rdata.Rdata],
    covers: RdataType = RdataType.NONE,
) -> dns.rrset.RRset:
    """An RRset of distinct records of one type (the checks of ``Rdataset.add`` skipped)."""
    rrset = dns.rrset.RRset(name, IN, rdtype, covers)
    rrset.ttl = ttl
    items = rrset.items
    for rd in rdatas:
        items[rd] = None
    return rrset


def raw_signer(private_key: _PrivateKey, algorithm: int) -> Callable[[bytes], bytes]:
    """A function returning the DNSSEC signature (RFC 4034, 6605, 8080 formats) of bytes."""
    if algorithm in (13, 14):
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        octets = 32 if algorithm == 13 else 48
        ecdsa = ec.ECDSA(hashes.SHA256() if algorithm == 13 else hashes.SHA384())
        sign = private_key.sign

        def ecdsa_sign(data: bytes) -> bytes:
            r, s = decode_dss_signature(sign(data, ecdsa))
            return r.to_bytes(octets, "big") + s.to_bytes(octets, "big")

        return ecdsa_sign
    if algorithm in (15, 16):
        assert isinstance(private_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        return private_key.sign
    if algorithm in (8, 10):
        assert isinstance(private_key, rsa.RSAPrivateKey)
        pkcs1 = padding.PKCS1v15()
        digest = hashes.SHA256() if algorithm == 8 else hashes.SHA512()
        rsa_sign = private_key.sign
        return lambda data: rsa_sign(data, pkcs1, digest)
    raise ValueError(f"unsupported DNSSEC algorithm {algorithm}")


class SignatureStore(Protocol):
    """Where signatures are looked up by their signature input, and remembered."""

    def get(self, key: bytes) -> RRSIG | None: ...

    def put(self, key: bytes, rrsig: RRSIG) -> None: ...


class RRsetSigner:
    """Signs RRsets with one key, for one signer name and validity window."""

    def __init__(
        self,
        private_key: _PrivateKey,
        dnskey: DNSKEY,
        signer: Name,
        inception: int,
        expiration: int,
        cache: SignatureStore | None = None,
    ) -> None:
        self.private_key = private_key
        self.algorithm = int(dnskey.algorithm)
        self.key_tag = dns.dnssec.key_id(dnskey)
        self.signer = signer
        self.inception = inception
        self.expiration = expiration
        self.cache = cache
        self._origin_wire = canonical_wire(signer)
        self._tail = _TAIL.pack(expiration, inception, self.key_tag) + self._origin_wire
        self._rdata_header = _HEADER.size + len(self._tail)
        self._sign = raw_signer(private_key, self.algorithm)
        self._algorithm = Algorithm.make(self.algorithm)
        self._pkcs8: bytes | None = None

    def signature_input(self, rrset: dns.rrset.RRset, owner: Name | None = None) -> bytes:
        """RRSIG RDATA without the signature, then the RRset in canonical form and order."""
        name = owner if owner is not None else rrset.name
        labels = len(name) - 1
        if name.is_wild():
            labels -= 1
        rdtype = rrset.rdtype
        ttl = rrset.ttl
        signer = self.signer
        rdatas = sorted([rd.to_digestable(signer) for rd in rrset])
        prefix = canonical_wire(name) + _RRFIXED.pack(rdtype, rrset.rdclass, ttl)
        parts = [_HEADER.pack(rdtype, self.algorithm, labels, ttl), self._tail]
        for rd in rdatas:
            parts.append(prefix)
            parts.append(len(rd).to_bytes(2, "big"))
            parts.append(rd)
        return b"".join(parts)

    def rrsig(self, data: bytes, signature: bytes) -> RRSIG:
        """The RRSIG record for ``data`` (a :meth:`signature_input`) and its signature."""
        rdtype, _, labels, ttl = _HEADER.unpack_from(data)
        rdata_hash = hash(data[: self._rdata_header] + signature)  # = hash(to_digestable)
        rd = _rdata(_RRSIG, RdataType.RRSIG, type_covered=RdataType.make(rdtype),
                    algorithm=self._algorithm, labels=labels,
                    original_ttl=ttl, expiration=self.expiration, inception=self.inception,
                    key_tag=self.key_tag, signer=self.signer, signature=signature,
                    _hash=rdata_hash)  # fmt: skip
        assert isinstance(rd, RRSIG)
        return rd

    def sign(self, rrset: dns.rrset.RRset, owner: Name | None = None) -> RRSIG:
        """The RRSIG of ``rrset`` (from the cache when there is one and it knows it)."""
        data = self.signature_input(rrset, owner)
        cache = self.cache
        if cache is not None:
            found = cache.get(data)
            if found is not None:
                return found
        rrsig = self.rrsig(data, self._sign(data))
        if cache is not None:
            cache.put(data, rrsig)
        return rrsig

    def sign_many(
        self, rrsets: Sequence[dns.rrset.RRset], *, parallel: bool = False
    ) -> list[RRSIG]:
        """The RRSIGs of ``rrsets``, in order; with ``parallel`` the signatures missing from
        the cache may be made in worker processes (see :func:`sign_parallel`)."""
        inputs = [self.signature_input(rrset) for rrset in rrsets]
        out: list[RRSIG | None] = [None] * len(inputs)
        cache = self.cache
        todo: list[int] = []
        for index, data in enumerate(inputs):
            found = cache.get(data) if cache is not None else None
            if found is None:
                todo.append(index)
            else:
                out[index] = found
        missing = [inputs[i] for i in todo]
        signatures = sign_parallel(self, missing) if parallel else None
        if signatures is None:
            signatures = [self._sign(data) for data in missing]
        for index, signature in zip(todo, signatures, strict=True):
            data = inputs[index]
            rrsig = self.rrsig(data, signature)
            if cache is not None:
                cache.put(data, rrsig)
            out[index] = rrsig
        return out  # type: ignore[return-value]

    def raw_sign(self, data: bytes) -> bytes:
        """The signature of ``data`` (a :meth:`signature_input`)."""
        return self._sign(data)

    def pkcs8(self) -> bytes:
        if self._pkcs8 is None:
            self._pkcs8 = self.private_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        return self._pkcs8


# ------------------------------------------------------------------ worker processes

#: Below this many signatures the work stays in this process (a worker round trip costs more).
PARALLEL_MIN = 400

#: The worker: a separate interpreter (not a fork of this possibly multi-threaded process, and
#: without importing the caller's ``__main__``) that needs only ``cryptography``. It reads
#: requests from stdin: algorithm, key length, count (``!III``), the PKCS#8 DER key, then
#: ``count`` inputs each prefixed by its length (``!I``); it answers with ``count`` signatures
#: prefixed by their lengths. It ends at end of input (its parent closed the pipe, or died).
_WORKER_SOURCE = r"""
import struct, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

def signer(der, algorithm):
    key = serialization.load_der_private_key(der, password=None)
    if algorithm in (13, 14):
        octets = 32 if algorithm == 13 else 48
        ecdsa = ec.ECDSA(hashes.SHA256() if algorithm == 13 else hashes.SHA384())
        def sign(data):
            r, s = decode_dss_signature(key.sign(data, ecdsa))
            return r.to_bytes(octets, "big") + s.to_bytes(octets, "big")
        return sign
    if algorithm in (15, 16):
        return key.sign
    if algorithm in (8, 10):
        digest = hashes.SHA256() if algorithm == 8 else hashes.SHA512()
        return lambda data: key.sign(data, padding.PKCS1v15(), digest)
    raise ValueError(algorithm)

def main():
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    def read(n):
        data = source.read(n)
        if len(data) != n:
            raise SystemExit(0)
        return data
    known = {}
    while True:
        algorithm, keylen, count = struct.unpack("!III", read(12))
        der = read(keylen)
        sign = known.get((der, algorithm))
        if sign is None:
            known.clear()
            sign = known[(der, algorithm)] = signer(der, algorithm)
        inputs = [read(struct.unpack("!I", read(4))[0]) for _ in range(count)]
        out = []
        for data in inputs:
            signature = sign(data)
            out.append(struct.pack("!I", len(signature)))
            out.append(signature)
        sink.write(b"".join(out))
        sink.flush()

main()
"""


class _Worker:
    """One signing worker process and its pipes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.pid = os.getpid()

    def send(self, pkcs8: bytes, algorithm: int, inputs: Sequence[bytes]) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        parts = [struct.pack("!III", algorithm, len(pkcs8), len(inputs)), pkcs8]
        for data in inputs:
            parts.append(len(data).to_bytes(4, "big"))
            parts.append(data)
        stdin.write(b"".join(parts))
        stdin.flush()

    def receive(self, count: int) -> list[bytes]:
        stdout = self.process.stdout
        assert stdout is not None
        out = []
        for _ in range(count):
            header = stdout.read(4)
            if len(header) != 4:
                raise OSError("signing worker ended")
            length = int.from_bytes(header, "big")
            signature = stdout.read(length)
            if len(signature) != length:
                raise OSError("signing worker ended")
            out.append(signature)
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


_workers: list[_Worker] = []
_workers_lock = threading.Lock()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def shutdown_workers() -> None:
    """Stop the worker processes (started again when needed)."""
    with _workers_lock:
        for worker in _workers:
            if worker.pid == os.getpid():
                worker.close()
        _workers.clear()


atexit.register(shutdown_workers)


def sign_parallel(signer: RRsetSigner, inputs: list[bytes]) -> list[bytes] | None:
    """The signatures of ``inputs``, made by this process and worker processes (one per other
    CPU) in equal shares; ``None`` when that is not worth it (few inputs, one CPU) or a worker
    failed (the caller then signs in this process)."""
    cpus = _cpus()
    if len(inputs) < PARALLEL_MIN or cpus < 2:
        return None
    with _workers_lock:
        try:
            if any(w.pid != os.getpid() for w in _workers):  # inherited by a fork: not ours
                _workers.clear()
            while len(_workers) < cpus - 1:
                _workers.append(_Worker())
            share = -(-len(inputs) // cpus)
            pkcs8 = signer.pkcs8()
            chunks = [inputs[i : i + share] for i in range(share, len(inputs), share)]
            busy = list(zip(_workers, chunks, strict=False))
            for worker, chunk in busy:
                worker.send(pkcs8, signer.algorithm, chunk)
            out = [signer.raw_sign(data) for data in inputs[:share]]
            for worker, chunk in busy:
                out.extend(worker.receive(len(chunk)))
            return out
        except (OSError, ValueError) as exc:
            log.warning("parallel signing failed (%r); signing in this process", exc)
            for worker in _workers:
                with contextlib.suppress(Exception):
                    worker.process.kill()
                    worker.close()
            _workers.clear()
            return None
