"""The asyncio DANCE TLS client: present a certificate and the ``dane_clientid`` ClientName.

    reader, writer = await connect("server.example.com", 8443,
                                   name="sensor7._device.example.com",
                                   cert="sensor7.pem", key="sensor7.key")

Under TLS 1.3 the client's handshake completes before the server has judged its certificate:
a refused client learns it on its first read (an alert, or end of stream). :func:`probe` does
that read and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from dance.service.relay import open_connection_within
from dance.tls.bridge import (
    DEFAULT_CODEPOINT,
    ConnectionCheck,
    DanceSSLSocket,
    ServerPolicy,
    ServerRejected,
    configure_client,
    state_of,
)

__all__ = [
    "DanceSSLSocket",
    "ProbeResult",
    "ServerCheck",
    "ServerPolicy",
    "ServerRejected",
    "client_context",
    "connect",
    "negotiated",
    "probe",
    "server_chain",
    "wrap_socket",
]

#: A check of the server, run after the handshake and before anything is sent: None to go on,
#: or the reason the server is not trusted (DANE: `dance.tls.dane.dane_check`). It is given the
#: connection: an asyncio ``StreamWriter``, or a blocking ``ssl.SSLSocket``.
ServerCheck = ConnectionCheck


def server_chain(connection: asyncio.StreamWriter | ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent, end entity first, as DER (unverified: for DANE, which
    decides from DNS, not from a CA store). ``connection``: an asyncio ``StreamWriter``, or the
    ``SSLSocket`` / ``SSLObject`` itself."""
    if isinstance(connection, asyncio.StreamWriter):
        obj = connection.get_extra_info("ssl_object")
    else:
        obj = connection
    if obj is None:
        return []
    try:
        chain = obj._sslobj.get_unverified_chain()
    except (AttributeError, ValueError):
        return []
    return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain or ()]  # type: ignore[attr-defined]


def client_context(
    *,
    name: str | None,
    cert: str | None,
    key: str | None,
    codepoint: int = DEFAULT_CODEPOINT,
    cafile: str | None = None,
    verify_server: bool = True,
    check_hostname: bool = True,
    raw_extension: bytes | None = None,
    server_policy: ServerPolicy | None = None,
) -> ssl.SSLContext:
    """A reusable client context (TLS 1.3 only) presenting ``cert``/``key`` as ``name``, for
    asyncio and for blocking sockets (``context.wrap_socket``, paho-mqtt's ``tls_set_context``).

    The server is verified against ``cafile`` (or the system store); ``verify_server=False``
    skips that (tests and ``dance connect --insecure`` only). ``server_policy`` (blocking
    sockets): decides before each handshake whether the server is authenticated by DANE or by
    PKIX (`dance.tls.dane.blocking_server_policy`); it needs ``verify_server=True``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify_server:
        if cafile:
            context.load_verify_locations(cafile=cafile)
        else:
            context.load_default_certs()
        context.check_hostname = check_hostname
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key)
    return configure_client(
        context, name, codepoint=codepoint, raw_extension=raw_extension, server_policy=server_policy
    )


def wrap_socket(
    sock: socket.socket,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None,
    server_check: ServerCheck | None = None,
) -> ssl.SSLSocket:
    """Blocking TLS over a connected ``sock`` with a DANCE client ``context``
    (:func:`client_context`): the handshake runs here (the ClientName is sent when the server
    asks for it, the context's server policy applies), then ``server_check``. A server refused by
    either is disconnected and `ServerRejected` raised: nothing was sent to it."""
    tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    try:
        tls.do_handshake()
        if server_check is not None:
            problem = server_check(tls)
            if problem is not None:
                raise ServerRejected(problem)
    except BaseException:
        with contextlib.suppress(OSError):
            tls.close()
        raise
    return tls


async def connect(
    host: str,
    port: int,
    *,
    name: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    codepoint: int = DEFAULT_CODEPOINT,
    cafile: str | None = None,
    verify_server: bool = True,
    check_hostname: bool = True,
    server_hostname: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    server_check: ServerCheck | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TLS 1.3 connection presenting the client identity; like ``open_connection``.

    ``server_check`` (e.g. from `dance.tls.dane.server_policy`) runs right after the handshake:
    a server it refuses is disconnected before anything is sent, and `ServerRejected` raised."""
    if context is None:
        context = client_context(
            name=name,
            cert=cert,
            key=key,
            codepoint=codepoint,
            cafile=cafile,
            verify_server=verify_server,
            check_hostname=check_hostname,
        )
    hostname = server_hostname if server_hostname is not None else host
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=hostname, ssl_handshake_timeout=timeout
    )
    if server_check is not None:
        problem = server_check(writer)
        if problem is not None:
            writer.transport.abort()
            raise ServerRejected(problem)
    return reader, writer


def negotiated(writer: asyncio.StreamWriter) -> dict[str, Any]:
    """What the handshake negotiated, as seen by the client."""
    obj = writer.get_extra_info("ssl_object")
    state = state_of(obj)
    # captured by asyncio when the handshake completed: still there once an alert has put the
    # SSL object in an error state (where OpenSSL reports the handshake as not done)
    cipher = writer.get_extra_info("cipher")
    return {
        "tls_version": cipher[1] if cipher else None,
        "cipher": cipher[0] if cipher else None,
        "clientid_requested": bool(state and state.requested),
        "client_name_sent": state.sent_name if state else None,
        "server_certificate_subject": _subject(obj),
    }


def _subject(obj: Any) -> str | None:
    if obj is None:
        return None
    try:
        der = obj.getpeercert(binary_form=True)
    except ValueError:  # an alert arrived first: the SSL object is in an error state
        return None
    if not der:
        return None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


@dataclass
class ProbeResult:
    """The outcome of :func:`probe`. ``connected`` is False when no TLS connection was
    established (nothing listening, a timeout, a failed handshake): the server never judged the
    client, which is neither accepted nor refused."""

    accepted: bool
    detail: str = ""
    reply: bytes = b""
    negotiated: dict[str, Any] = field(default_factory=dict)
    connected: bool = True

    @property
    def outcome(self) -> str:
        """``accepted``, ``refused`` or ``could-not-connect``."""
        if not self.connected:
            return "could-not-connect"
        return "accepted" if self.accepted else "refused"

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "outcome": self.outcome,
            "detail": self.detail,
            "reply": self.reply.decode("utf-8", "replace"),
            "negotiated": self.negotiated,
        }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno).lower()  # asyncio's own text names no reason
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


async def probe(
    host: str,
    port: int,
    *,
    context: ssl.SSLContext,
    server_hostname: str | None = None,
    send: bytes = b"",
    read_timeout: float = 2.0,
    timeout: float = 10.0,
    server_check: ServerCheck | None = None,
) -> ProbeResult:
    """Connect, optionally send ``send``, then read: did the server accept the client?

    Under TLS 1.3 the client's handshake completes before the server judges the certificate,
    so the verdict comes from the first read: accepted = the server sent application data, or
    kept the connection open for ``read_timeout`` seconds without an alert; refused = an alert,
    or the connection closed before any data. No TLS connection at all (connection refused,
    ``timeout`` expired, handshake failed): ``connected`` False."""
    hostname = server_hostname if server_hostname is not None else host
    try:
        reader, writer = await open_connection_within(
            host,
            port,
            timeout,
            ssl=context,
            server_hostname=hostname,
            ssl_handshake_timeout=timeout,
        )
    except ssl.SSLError as exc:
        return ProbeResult(False, f"TLS handshake failed: {_reason(exc)}", connected=False)
    except TimeoutError:
        return ProbeResult(False, f"no connection within {timeout:g} s", connected=False)
    except OSError as exc:
        return ProbeResult(False, _reason(exc), connected=False)
    info = negotiated(writer)
    if server_check is not None:
        problem = server_check(writer)
        info["server_authenticated"] = problem is None
        if problem is not None:  # nothing is sent to a server that is not the one in DNS
            writer.transport.abort()
            return ProbeResult(False, f"server not authenticated: {problem}", b"", info)
    try:
        if send:
            writer.write(send)
            await writer.drain()
        try:
            data = await asyncio.wait_for(reader.read(65536), read_timeout)
        except TimeoutError:
            return ProbeResult(
                True, f"no alert and no data; connection kept open {read_timeout:g} s", b"", info
            )
        if data:
            return ProbeResult(True, "server sent data", data, info)
        return ProbeResult(
            False,
            "server closed the connection before sending data (a refusal after its DNS "
            "lookup, or no service behind it)",
            b"",
            info,
        )
    except ssl.SSLError as exc:
        return ProbeResult(False, f"alert: {_reason(exc)}", b"", info)
    except OSError as exc:
        return ProbeResult(False, f"connection error: {_reason(exc)}", b"", info)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), timeout)
