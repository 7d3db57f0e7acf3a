"""DANE authentication of a TLS server by a client (RFC 6698, RFC 7671, RFC 7672's rules).

    check, use_pkix = await server_policy(resolver, "api.example.com", 443, policy="dane")
    result = await probe(host, port, context=client_context(..., verify_server=use_pkix),
                         server_check=check)

`server_policy` looks up the DNSSEC-validated TLSA RRset at ``_PORT._tcp.NAME`` and decides:

* ``dane``: secure records must exist; the server's chain must match them (`verify_server`).
* ``dane-or-pkix``: DANE when secure records exist (no fallback when they do not match); PKIX
  (``use_pkix`` True, no check) when the name provably has none (a secure denial or an insecure
  zone); bogus or unreachable DNS is refused.

`ServerNotAuthenticated` is raised when the server cannot be authenticated before connecting.

Blocking clients (paho-mqtt and other ``ssl.SSLSocket`` users) take the same decision before
every handshake, with a fresh lookup (records may have been rolled over since the last one):

    policy = blocking_server_policy(lambda: TLSAResolver(...), policy="dane-or-pkix")
    context = client_context(name=..., cert=..., key=..., server_policy=policy)
    paho_client.tls_set_context(context)
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from dance.credentials import CertificateChain, CredentialError
from dance.identity import Rejection
from dance.tls.bridge import ServerPolicy, ServerRejected
from dance.tls.client import ServerCheck, server_chain
from dance.tlsa import server_owner, verify_server

__all__ = [
    "POLICIES",
    "ServerNotAuthenticated",
    "blocking_server_policy",
    "dane_check",
    "server_policy",
]

POLICIES = ("pkix", "dane", "dane-or-pkix")


class ServerNotAuthenticated(ServerRejected):
    """No usable TLSA records (or bogus / unreachable DNS) for a server that must use DANE."""


class _Answer(Protocol):
    @property
    def records(self) -> tuple[bytes, ...]: ...

    @property
    def reason(self) -> str: ...

    @property
    def outcome(self) -> object: ...


class _Source(Protocol):
    async def lookup_tlsa(self, name: str) -> _Answer: ...


def dane_check(
    name: str,
    port: int,
    records: Sequence[bytes],
    *,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> ServerCheck:
    """A check of the server's presented chain against ``records`` (secure TLSA RDATA)."""
    owner = server_owner(name, port)

    def check(connection: Any) -> str | None:
        try:
            chain = CertificateChain.from_der(server_chain(connection))
        except (CredentialError, ValueError) as exc:
            return f"unreadable server certificate: {exc}"
        result = verify_server(name, chain, records, now=clock(), port=port)
        if isinstance(result, Rejection):
            return f"{result.reason.value} ({owner}: {result.detail})"
        return None

    return check


async def server_policy(
    source: _Source,
    name: str,
    port: int,
    *,
    policy: str = "dane",
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> tuple[ServerCheck | None, bool]:
    """(the server check to pass to `probe`/`connect`, whether PKIX verification applies)."""
    if policy not in POLICIES:
        raise ValueError(f"policy is one of {', '.join(POLICIES)}")
    if policy == "pkix":
        return None, True
    owner = server_owner(name, port)
    found = await source.lookup_tlsa(owner)
    outcome = getattr(found.outcome, "value", str(found.outcome))
    if outcome == "secure" and found.records:
        return dane_check(name, port, found.records, clock=clock), False
    if policy == "dane-or-pkix" and outcome in ("secure-absent", "insecure"):
        return None, True  # provably no DANE for this server: a CA decides
    raise ServerNotAuthenticated(f"no usable TLSA records at {owner}: {outcome} ({found.reason})")


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _ResolverSource(_Source, AbstractAsyncContextManager[Any], Protocol):
    pass


def blocking_server_policy(
    resolver: Callable[[], _ResolverSource],
    *,
    policy: str = "dane-or-pkix",
    server_name: str | None = None,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> ServerPolicy:
    """`server_policy` for blocking sockets (`dance.tls.client_context(server_policy=...)`).

    Before each handshake it opens ``resolver()`` (an async context manager with ``lookup_tlsa``,
    e.g. a `dance.dns.TLSAResolver`), looks up ``_PORT._tcp.NAME`` (NAME: ``server_name``, else
    the connection's server_hostname; PORT: the port connected to) and closes it again; ``pkix``
    looks nothing up. Raises `ServerNotAuthenticated` (a `ServerRejected`) where `server_policy`
    does: the handshake is then never started. Not for a thread that runs an event loop."""
    if policy not in POLICIES:
        raise ValueError(f"policy is one of {', '.join(POLICIES)}")

    def decide(sni: str | None, port: int) -> tuple[ServerCheck | None, bool]:
        if policy == "pkix":
            return None, True
        hostname = server_name or sni
        if not hostname or _is_address(hostname):
            raise ServerNotAuthenticated(
                "DANE server authentication needs a host name, not an address"
            )

        async def lookup(hostname: str) -> tuple[ServerCheck | None, bool]:
            async with resolver() as source:
                return await server_policy(source, hostname, port, policy=policy, clock=clock)

        return asyncio.run(lookup(hostname))

    return decide
