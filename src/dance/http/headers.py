"""Client certificates passed by a TLS front end in an HTTP header, parsed strictly.

Three encodings are understood (``fmt``):

- ``nginx``: ``$ssl_client_escaped_cert``, the URL-escaped PEM of the client certificate;
- ``rfc9440``: the RFC 9440 ``Client-Cert`` structured-field byte sequence ``:base64(DER):``
  (and ``Client-Cert-Chain``, a list of such items, for the rest of the chain);
- ``base64``: HAProxy ``%[ssl_c_der,base64]``, the base64 of the DER;
- ``auto``: any of the above, told apart by the first character (``:`` RFC 9440, ``-`` or ``%``
  escaped PEM, otherwise base64 DER; the alphabets do not overlap).

Limits: a header longer than ``max_header_bytes`` is refused before it is decoded; exactly one
certificate is accepted unless ``allow_chain`` is set (then at most ``max_chain`` in all); base64
must be canonical (standard alphabet, padding, nothing else); the DER must be one SEQUENCE with
no trailing bytes. Every refusal is a `HeaderError` with a stable ``code``.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import urllib.parse
from collections import OrderedDict
from typing import Final, Literal

from cryptography import x509

from dance.credentials import CertificateChain, CredentialError
from dance.names import InvalidName, parse_client_name

__all__ = [
    "CERT_FORMATS",
    "CertFormat",
    "CertificateHeaderParser",
    "HeaderError",
    "sole_dns_name",
]

CertFormat = Literal["auto", "nginx", "rfc9440", "base64"]
CERT_FORMATS: Final = ("auto", "nginx", "rfc9440", "base64")

DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024
DEFAULT_MAX_CHAIN: Final = 4
_CACHE_MAX_KEY: Final = 8 * 1024  # larger headers are parsed every time (bounds the cache memory)

# Stable codes (counted; safe to log).
MISSING = "cert-missing"
TOO_LARGE = "cert-header-too-large"
BAD_ENCODING = "cert-bad-encoding"
BAD_CERTIFICATE = "cert-bad-certificate"
SEVERAL = "cert-several-certificates"
CHAIN_TOO_LONG = "cert-chain-too-long"

_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n?([A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----"
)


class HeaderError(ValueError):
    """A certificate header that cannot be used; ``code`` is stable, the message is for logs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _b64(text: str) -> bytes:
    """Canonical standard base64 (with padding) to bytes."""
    if not text or len(text) % 4 or not _B64.fullmatch(text):
        raise HeaderError(BAD_ENCODING, "not canonical base64")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HeaderError(BAD_ENCODING, "not canonical base64") from None
    if text[-1] == "=" and base64.b64encode(data).decode("ascii") != text:
        raise HeaderError(BAD_ENCODING, "not canonical base64 (padding bits)")
    return data


def _der_length_ok(der: bytes) -> bool:
    """One DER SEQUENCE filling ``der`` exactly (definite length, no trailing bytes)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return 2 + first == len(der)
    count = first & 0x7F
    if count == 0 or count > 4 or len(der) < 2 + count:
        return False
    length = int.from_bytes(der[2 : 2 + count], "big")
    return 2 + count + length == len(der)


def _check_der(der: bytes) -> bytes:
    if not _der_length_ok(der):
        raise HeaderError(BAD_CERTIFICATE, "not a single DER certificate")
    return der


def _sf_binary_list(text: str) -> list[bytes]:
    """An RFC 8941 list of byte sequences (``:b64:, :b64:``) without parameters."""
    items = []
    for raw in text.split(","):
        item = raw.strip(" \t")
        if len(item) < 2 or item[0] != ":" or item[-1] != ":":
            raise HeaderError(BAD_ENCODING, "not an RFC 8941 byte sequence")
        items.append(_b64(item[1:-1]))
    return items


class CertificateHeaderParser:
    """Parses certificate headers into a `CertificateChain`, with limits and a small cache.

    The cache maps the exact header text to the parsed chain (parsing is the costly part for a
    front end that sends the same certificate on every request); it is not a decision cache. It
    is an LRU of ``cache_size`` entries holding headers of at most 8 KiB, so at most 16 MiB of
    keys by default.
    """

    def __init__(
        self,
        fmt: CertFormat = "auto",
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        allow_chain: bool = False,
        max_chain: int = DEFAULT_MAX_CHAIN,
        cache_size: int = 2048,
    ) -> None:
        if fmt not in CERT_FORMATS:
            raise ValueError(f"unknown certificate header format {fmt!r}")
        if max_header_bytes < 64 or max_chain < 1:
            raise ValueError("max_header_bytes must be >= 64 and max_chain >= 1")
        self.fmt: CertFormat = fmt
        self.max_header_bytes = max_header_bytes
        self.allow_chain = allow_chain
        self.max_chain = max_chain if allow_chain else 1
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], CertificateChain] = OrderedDict()
        self._lock = threading.Lock()

    def parse(self, value: str | None, chain_value: str | None = None) -> CertificateChain:
        """The presented chain (end entity first). Raises `HeaderError`."""
        if value is None or not value.strip():
            raise HeaderError(MISSING, "no client certificate")
        if chain_value is not None and not chain_value.strip():
            chain_value = None
        if len(value) > self.max_header_bytes or (
            chain_value is not None and len(chain_value) > self.max_header_bytes * self.max_chain
        ):
            raise HeaderError(TOO_LARGE, "certificate header too large")
        if chain_value is not None and not self.allow_chain:
            raise HeaderError(SEVERAL, "a certificate chain header was sent; chains are off")
        key = (value, chain_value or "")
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        ders = self._decode(value.strip())
        if chain_value is not None:
            ders += [_check_der(d) for d in _sf_binary_list(chain_value.strip())]
        if len(ders) > 1 and not self.allow_chain:
            raise HeaderError(SEVERAL, f"{len(ders)} certificates; exactly one is accepted")
        if len(ders) > self.max_chain:
            raise HeaderError(CHAIN_TOO_LONG, f"{len(ders)} certificates; at most {self.max_chain}")
        try:
            chain = CertificateChain.from_der(ders)
        except CredentialError as exc:
            raise HeaderError(BAD_CERTIFICATE, str(exc)) from None
        if self.cache_size > 0 and len(value) + len(chain_value or "") <= _CACHE_MAX_KEY:
            with self._lock:
                self._cache[key] = chain
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return chain

    def _decode(self, text: str) -> list[bytes]:
        fmt = self.fmt
        if fmt == "auto":
            first = text[0]
            fmt = "rfc9440" if first == ":" else "nginx" if first in "-%" else "base64"
        if fmt == "rfc9440":
            items = _sf_binary_list(text)
            if len(items) != 1:
                raise HeaderError(SEVERAL, "Client-Cert holds one certificate")
            return [_check_der(items[0])]
        if fmt == "base64":
            return [_check_der(_b64(text))]
        return self._pem(text)

    def _pem(self, text: str) -> list[bytes]:
        if "%" in text:
            if not text.isascii():
                raise HeaderError(BAD_ENCODING, "bad URL escaping")
            try:
                text = urllib.parse.unquote(text, errors="strict")
            except UnicodeDecodeError:
                raise HeaderError(BAD_ENCODING, "bad URL escaping") from None
        if not text.isascii():
            raise HeaderError(BAD_ENCODING, "PEM is not ASCII")
        text = text.strip()
        ders: list[bytes] = []
        pos = 0
        for match in _PEM.finditer(text):
            if text[pos : match.start()].strip():
                raise HeaderError(BAD_ENCODING, "text outside PEM certificate blocks")
            pos = match.end()
            ders.append(_check_der(_b64("".join(match.group(1).split()))))
            if len(ders) > self.max_chain:
                raise HeaderError(
                    SEVERAL if not self.allow_chain else CHAIN_TOO_LONG,
                    "too many certificates",
                )
        if not ders or text[pos:].strip():
            raise HeaderError(BAD_ENCODING, "not PEM certificate blocks")
        return ders


def sole_dns_name(chain: CertificateChain) -> str | None:
    """The end entity's SAN dNSName when it has exactly one, usable as a ClientName."""
    try:
        san = chain.end_entity.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        names = san.get_values_for_type(x509.DNSName)
    except (x509.ExtensionNotFound, ValueError):
        return None
    if len(names) != 1 or "*" in names[0]:
        return None
    try:
        return parse_client_name(names[0]).text
    except InvalidName:
        return None
