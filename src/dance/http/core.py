"""The HTTP decision shared by the agent and the ASGI/WSGI middleware.

    certificate header(s) + claimed ClientName  ->  Identity | Denied

The certificate comes from a header set by a trusted TLS front end (see `dance.http.headers`);
the claimed ClientName from a header, the request body, or, when absent, the end entity's only
SAN dNSName. Policy, lookup, matching and the decision cache are the `Authenticator`'s; this layer
only reads headers, applies the HTTP-level limits and counts outcomes.

A `Denied` carries a *public* code (the only thing the peer sees, deliberately coarse) and an
internal ``reason`` (stable, counted, logged with the operator detail).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509

from dance.auth import Authenticator
from dance.credentials import CertificateChain
from dance.http.headers import (
    MISSING,
    CertificateHeaderParser,
    HeaderError,
    sole_dns_name,
)
from dance.identity import Identity, Rejection
from dance.names import ClientName, InvalidName, parse_client_name

__all__ = [
    "IDENTITY_HEADERS",
    "Denied",
    "HttpAuth",
    "RequestSettings",
    "TrustedProxies",
    "encode_header_value",
    "identity_headers",
    "name_from_json_body",
]

log = logging.getLogger("dance.http")

# Public codes: all a rejected peer learns.
NO_CERTIFICATE: Final = "no-client-certificate"
BAD_CERTIFICATE: Final = "bad-client-certificate"
BAD_NAME: Final = "bad-client-name"
NOT_AUTHENTICATED: Final = "not-authenticated"
UNTRUSTED_SOURCE: Final = "untrusted-source"

# Internal reasons of this layer (the Authenticator's are `Reason` values).
NAME_MISSING: Final = "name-missing"
NAME_MALFORMED: Final = "name-malformed"
NAME_NOT_IN_CERT: Final = "claimed-name-not-in-certificate"

CLIENT_ID_HEADER: Final = "X-DANCE-Client-ID"
USER_HEADER: Final = "X-DANCE-User"
CLAIM_HEADER: Final = "X-DANCE-Client-Name"  # the claimed ClientName (input)
# Headers that carry an authenticated identity: always removed from incoming requests.
IDENTITY_HEADERS: Final = (CLIENT_ID_HEADER.lower(), USER_HEADER.lower())

MAX_NAME_LENGTH: Final = 512
_PREPARED_SIZE: Final = 2048  # HttpAuth.prepare results kept
_PREPARED_MAX_KEY: Final = 16 * 1024  # larger header values are parsed every time


@dataclass(frozen=True, slots=True)
class Denied:
    """A refused request: 403 with ``code``; ``reason`` and ``detail`` are for operators."""

    code: str
    reason: str
    detail: str = ""
    status: int = 403
    client_name: str = ""  # the name that was refused, when known (access log)
    dns_outcome: str = ""  # the DNS outcome behind the refusal, when there was a lookup

    accepted = False


def encode_header_value(text: str) -> str:
    """Visible ASCII as is; ``%``, controls, spaces and non-ASCII as UTF-8 %XX escapes."""
    if text.isascii() and text.isprintable() and " " not in text and "%" not in text:
        return text
    return urllib.parse.quote(text, safe="!#$&'()*+,/:;=?@[]~^_`{|}<>.-\"\\")


def identity_headers(identity: Identity) -> list[tuple[str, str]]:
    """The response/request headers that carry an authenticated identity."""
    out = [(CLIENT_ID_HEADER, encode_header_value(identity.identity))]
    if identity.user_id is not None:
        out.append((USER_HEADER, encode_header_value(identity.user_id)))
    return out


def name_from_json_body(body: bytes, field: str) -> str | None:
    """``body[field]`` when ``body`` is a JSON object whose ``field`` is a string."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, dict):
        value = doc.get(field)
        if isinstance(value, str):
            return value
    return None


class TrustedProxies:
    """Addresses allowed to hand over client certificates in headers (CIDRs or addresses)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)
        self._memo: dict[str, bool] = {}

    def trusts(self, address: str | None) -> bool:
        if not address:
            return False
        hit = self._memo.get(address)
        if hit is not None:
            return hit
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        result = any(ip in net for net in self.networks)
        if len(self._memo) < 4096:
            self._memo[address] = result
        return result


LOOPBACK: Final = ("127.0.0.0/8", "::1/128")


def forbidden_body(code: str) -> bytes:
    """The JSON body of a 403: a stable public code and nothing else."""
    return b'{"error":"forbidden","code":"' + code.encode("ascii") + b'"}'


@dataclass(frozen=True)
class RequestSettings:
    """Where the middleware finds its inputs, and whom it trusts to send certificates."""

    trusted_proxies: TrustedProxies = field(default_factory=lambda: TrustedProxies(LOOPBACK))
    cert_header: str = "client-cert"
    chain_header: str = "client-cert-chain"
    name_header: str = CLAIM_HEADER.lower()
    name_field: str | None = "dane_clientid"
    max_body: int = 64 * 1024

    def inputs(
        self, http_auth: HttpAuth, peer: str | None, get: Callable[[str], list[str]]
    ) -> tuple[str | None, str | None, str | None] | Denied:
        """(certificate, chain, claimed name) from the request headers, or a denial.

        Certificate headers count only from a trusted proxy; from anyone else they are ignored
        and the request is refused (counted as ``cert-header-untrusted-source``)."""
        certs, chains, names = get(self.cert_header), get(self.chain_header), get(self.name_header)
        if not self.trusted_proxies.trusts(peer):
            if certs or chains:
                return http_auth.refuse(NO_CERTIFICATE, "cert-header-untrusted-source", str(peer))
            return http_auth.refuse(NO_CERTIFICATE, "untrusted-source", str(peer))
        if len(certs) > 1 or len(chains) > 1:
            return http_auth.refuse(BAD_CERTIFICATE, "cert-several-headers")
        if len(names) > 1:
            return http_auth.refuse(BAD_NAME, "name-several-headers")
        return (
            certs[0] if certs else None,
            chains[0] if chains else None,
            names[0] if names else None,
        )


def _cert_names(chain: CertificateChain) -> frozenset[str]:
    try:
        san = chain.end_entity.certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
        return frozenset(n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName))
    except (x509.ExtensionNotFound, ValueError):
        return frozenset()


class HttpAuth:
    """Certificate header + claimed name -> Identity | Denied, through the Authenticator."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        parser: CertificateHeaderParser | None = None,
        name_in_certificate: bool = True,
    ) -> None:
        self.authenticator = authenticator
        self.parser = parser or CertificateHeaderParser()
        self.name_in_certificate = name_in_certificate
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {"requests": 0, "accepted": 0, "denied": 0}
        # prepare()'s successful results by header values: a front end sends the same
        # certificate header for every request of a client (bounded, oldest out first).
        self._prepared: dict[
            tuple[str, str | None, str | None], tuple[ClientName, CertificateChain]
        ] = {}

    def count(self, key: str) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + 1

    def deny(self, code: str, reason: str, detail: str = "") -> Denied:
        self.count("denied")
        self.count(f"denied_{reason}")
        log.info("denied: %s (%s) %s", code, reason, detail)
        return Denied(code, reason, detail)

    def refuse(self, code: str, reason: str, detail: str = "") -> Denied:
        """Count a request refused before `prepare` and deny it."""
        self.count("requests")
        return self.deny(code, reason, detail)

    def stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.counters)
        out.update({f"auth_{k}": v for k, v in self.authenticator.stats().items()})
        return out

    def prepare(
        self, cert: str | None, chain: str | None, claimed: str | None
    ) -> tuple[ClientName, CertificateChain] | Denied:
        """Parse the headers and settle the ClientName (no DNS, no matching)."""
        self.count("requests")
        key = (cert, chain, claimed) if cert is not None else None
        if key is not None:
            hit = self._prepared.get(key)
            if hit is not None:
                return hit
        result = self._prepare(cert, chain, claimed)
        if (
            key is not None
            and not isinstance(result, Denied)
            and len(cert or "") + len(chain or "") + len(claimed or "") <= _PREPARED_MAX_KEY
        ):
            with self._lock:
                prepared = self._prepared
                prepared[key] = result
                while len(prepared) > _PREPARED_SIZE:
                    del prepared[next(iter(prepared))]
        return result

    def _prepare(
        self, cert: str | None, chain: str | None, claimed: str | None
    ) -> tuple[ClientName, CertificateChain] | Denied:
        try:
            presented = self.parser.parse(cert, chain)
        except HeaderError as exc:
            code = NO_CERTIFICATE if exc.code == MISSING else BAD_CERTIFICATE
            return self.deny(code, exc.code, str(exc))
        if claimed is not None and claimed.strip():
            if len(claimed) > MAX_NAME_LENGTH:
                return self.deny(BAD_NAME, NAME_MALFORMED, "claimed name too long")
            try:
                name = parse_client_name(claimed.strip())
            except InvalidName as exc:
                return self.deny(BAD_NAME, NAME_MALFORMED, f"{exc.reason}: {exc}")
            if self.name_in_certificate:
                names = _cert_names(presented)
                if names and (name.user_domain or name.text) not in names:
                    return self.deny(
                        NOT_AUTHENTICATED, NAME_NOT_IN_CERT, f"{name.text} not a SAN dNSName"
                    )
        else:
            sole = sole_dns_name(presented)
            if sole is None:
                return self.deny(BAD_NAME, NAME_MISSING, "no claimed name, no single SAN dNSName")
            name = parse_client_name(sole)
        return name, presented

    def _finish(self, result: Identity | Rejection) -> Identity | Denied:
        if isinstance(result, Identity):
            self.count("accepted")
            return result
        denied = self.deny(
            NOT_AUTHENTICATED, result.reason.value, f"{result.client_name}: {result.detail}"
        )
        return dataclasses.replace(
            denied, client_name=result.client_name or "", dns_outcome=result.dns_outcome or ""
        )

    def decide_cached(
        self, name: ClientName, presented: CertificateChain
    ) -> Identity | Denied | None:
        """The decision from the Authenticator's caches only; None when a lookup is needed."""
        result = self.authenticator.authenticate_cached(name, presented)
        return None if result is None else self._finish(result)

    async def decide(self, name: ClientName, presented: CertificateChain) -> Identity | Denied:
        return self._finish(await self.authenticator.authenticate(name, presented))

    async def authenticate(
        self, cert: str | None, chain: str | None = None, claimed: str | None = None
    ) -> Identity | Denied:
        """Decide one request. Never raises for bad input."""
        prepared = self.prepare(cert, chain, claimed)
        if isinstance(prepared, Denied):
            return prepared
        return await self.decide(*prepared)
