"""The network server's side: send a JoinReq to a join server authenticated by DANE only.

    result = await join_request(req, host="127.0.0.1", port=443, server_name="js.example.test",
                                client_name="ns1.netid-000013.example.test",
                                cert="ns1.pem", key="ns1.key", resolver=resolver)
    result.answer["Result"]["ResultCode"]

Order (nothing is sent to a join server that is not the one in DNS):

1. the JoinReq is checked against the schema (`dance.lorawan.messages`);
2. the TLSA records at ``_PORT._tcp.SERVER_NAME`` are looked up through the DNSSEC-validating
   ``resolver``; anything but a secure, non-empty answer refuses (``server-dns-insecure``,
   ``server-dns-bogus``, ``server-dns-absent``, ``server-dns-indeterminate``), and so do secure
   records none of which is usable (``server-dns-unusable``: PKIX usages 0 and 1 need a CA store,
   which there is not, unknown digests...): no CA, no fallback;
3. TLS 1.3 with the network server's certificate and its ``dane_clientid`` ClientName; the
   server's certificate is not checked against any CA store (there is none) but, right after the
   handshake, by `dance.tlsa.verify_server` against those records (``server-key-mismatch``: the
   connection is aborted, nothing written);
4. one HTTP/1.1 POST, written and read by h11 (``Connection: close``); a join server that
   refused our certificate closes the connection (TLS 1.3: after our handshake completed):
   ``refused-by-server``; an HTTP error status: ``http-error``;
5. the JoinAns is checked against the schema and must answer this request (TransactionID,
   SenderID and ReceiverID swapped): ``bad-answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import h11

from dance.credentials import CertificateChain, CredentialError
from dance.dns import LookupResult, Outcome
from dance.identity import Identity, Reason, Rejection
from dance.lorawan.messages import JOIN_ANS, JOIN_REQ, MAX_MESSAGE, MessageError, encode, parse
from dance.service.relay import open_connection_within
from dance.tls.bridge import DEFAULT_CODEPOINT
from dance.tls.client import client_context, server_chain
from dance.tlsa import MalformedRecord, TLSARecord, server_owner, usable_records, verify_server

__all__ = ["JoinError", "JoinResult", "TLSALookup", "authenticate_server", "join_request"]


class TLSALookup(Protocol):
    """A DNSSEC-validating source of TLSA records, e.g. `dance.dns.TLSAResolver`."""

    async def lookup_tlsa(self, name: str) -> LookupResult: ...


class JoinError(Exception):
    """The exchange failed; ``reason`` is stable, ``sent`` tells whether the JoinReq left."""

    def __init__(self, reason: str, detail: str = "", *, sent: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.sent = sent


@dataclass(frozen=True)
class JoinResult:
    answer: dict[str, Any]  # the JoinAns, validated
    server: Identity  # how the join server was authenticated (TLSA owner, record)
    client_name: str


async def authenticate_server(
    resolver: TLSALookup, server_name: str, port: int
) -> tuple[str, tuple[bytes, ...]]:
    """The owner name and the secure TLSA records of a join server, or `JoinError`."""
    owner = server_owner(server_name, port)
    found = await resolver.lookup_tlsa(owner)
    if found.outcome is Outcome.SECURE and found.records:
        parsed = []
        for rdata in found.records:
            with contextlib.suppress(MalformedRecord):
                parsed.append(TLSARecord.from_wire(rdata))
        if not usable_records(parsed):  # e.g. only PKIX usages: there is no CA store here
            raise JoinError("server-dns-unusable", f"no usable TLSA record at {owner}")
        return owner, found.records
    outcome = found.outcome.value if found.outcome is not Outcome.SECURE else "secure-absent"
    reason = {
        "secure-absent": "server-dns-absent",
        "insecure": "server-dns-insecure",
        "bogus": "server-dns-bogus",
    }.get(outcome, "server-dns-indeterminate")
    raise JoinError(reason, f"no usable TLSA records at {owner}: {outcome} ({found.reason})")


async def join_request(
    message: Mapping[str, Any],
    *,
    host: str,
    port: int,
    server_name: str,
    client_name: str,
    cert: str,
    key: str,
    resolver: TLSALookup,
    service_port: int | None = None,
    path: str = "/",
    codepoint: int = DEFAULT_CODEPOINT,
    timeout: float = 10.0,
) -> JoinResult:
    """Send one JoinReq to ``host:port`` and return the validated JoinAns; `JoinError`
    otherwise. The TLSA records are those at ``_SERVICE_PORT._tcp.SERVER_NAME`` (``service_port``
    defaults to ``port``; give 443 when a test or a port mapping reaches the service on another
    port); ``server_name`` is also the SNI and the HTTP Host."""
    try:
        if message.get("MessageType") != JOIN_REQ:
            raise MessageError("unknown-message-type", "only JoinReq is sent")
        payload = encode(message)
    except MessageError as exc:
        raise JoinError("bad-request-message", str(exc)) from None
    dane_port = port if service_port is None else service_port
    owner, records = await authenticate_server(resolver, server_name, dane_port)
    context = client_context(
        name=client_name, cert=cert, key=key, codepoint=codepoint, verify_server=False
    )  # fmt: skip  (DANE below, no CA store)
    try:
        reader, writer = await open_connection_within(
            host, port, timeout, ssl=context, server_hostname=server_name,
            ssl_handshake_timeout=timeout,
        )  # fmt: skip
    except (OSError, TimeoutError) as exc:
        raise JoinError("could-not-connect", f"{host}:{port}: {exc!r}"[:300]) from None
    try:
        server = _check_server(writer, server_name, dane_port, owner, records)
        if isinstance(server, Rejection):
            writer.transport.abort()  # nothing is sent to a server that is not the one in DNS
            raise JoinError("server-key-mismatch", f"{owner}: {server}")
        status, body = await asyncio.wait_for(
            _exchange(reader, writer, server_name, path, payload), timeout
        )
    except TimeoutError:
        raise JoinError("timeout", f"no answer within {timeout:g} s", sent=True) from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
    if status != 200:
        raise JoinError("http-error", f"{status} {_error_of(body)}", sent=True)
    try:
        answer = parse(body, expect=JOIN_ANS)
    except MessageError as exc:
        raise JoinError("bad-answer", str(exc), sent=True) from None
    if (
        answer["TransactionID"] != message["TransactionID"]
        or answer["SenderID"].lower() != message["ReceiverID"].lower()
        or answer["ReceiverID"].lower() != message["SenderID"].lower()
    ):
        raise JoinError("bad-answer", "the JoinAns does not answer this JoinReq", sent=True)
    return JoinResult(answer, server, client_name)


def _check_server(
    writer: asyncio.StreamWriter,
    server_name: str,
    port: int,
    owner: str,
    records: tuple[bytes, ...],
) -> Identity | Rejection:
    try:
        chain = CertificateChain.from_der(server_chain(writer))
    except (CredentialError, ValueError) as exc:
        return Rejection(Reason.MALFORMED_INPUT, f"unreadable server certificate: {exc}", owner)
    return verify_server(
        server_name, chain, records, now=datetime.datetime.now(datetime.UTC), port=port
    )


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    server_name: str,
    path: str,
    payload: bytes,
) -> tuple[int, bytes]:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=16 * 1024)
    headers = [
        ("Host", server_name),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(payload))),
        ("Connection", "close"),
    ]
    out = conn.send(h11.Request(method="POST", target=path, headers=headers)) or b""
    out += conn.send(h11.Data(data=payload)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    status: int | None = None
    body = bytearray()
    try:
        writer.write(out)
        await writer.drain()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(4096)
                conn.receive_data(data)  # b"" is the end of stream
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_MESSAGE:
                    raise JoinError("bad-answer", "answer too large", sent=True)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)) or event is h11.PAUSED:
                break
    except (ssl.SSLError, ConnectionError, h11.RemoteProtocolError) as exc:
        if status is None:
            raise JoinError(
                "refused-by-server",
                f"the join server closed the connection without an answer ({exc!r})"[:300],
                sent=True,
            ) from None
        raise JoinError("bad-answer", repr(exc)[:300], sent=True) from None
    if status is None:
        raise JoinError(
            "refused-by-server", "the join server closed the connection without an answer",
            sent=True,
        )  # fmt: skip
    return status, bytes(body)


def _error_of(body: bytes) -> str:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return str(obj["error"])[:64]
    return ""
