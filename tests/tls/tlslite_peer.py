"""An independent ``dane_clientid`` peer on tlslite-ng (pure Python), built only for interop tests.

It shares no code with ``dance.tls`` (nor ``dance.names``): it is a second, independent reading of
draft-ietf-dance-client-auth-13 as digested in ``shared/reference/dance-specs.md`` sections 1 and 9,
so the project's OpenSSL-based client and server can be tested against it in both directions.
It is slow (one complete P-256 handshake, client and server both in Python, costs about 21 ms of
CPU: about 45 per CPU-second; Ed25519 about 40, RSA-3072 about 19) and not constant-time: tests
only, never production. Requires ``tlslite-ng==0.8.2`` (and its dependency ``ecdsa``).

Example (pytest; certificates from ``dance.certs`` / ``tests.pki``)::

    from tests.tls.tlslite_peer import connect, run_server

    with run_server(server_cert_pem, server_key_pem, codepoint=0xFFDC) as peer:
        # ... the project's client connects to ("127.0.0.1", peer.port) and sends one line ...
        (record,) = peer.wait_for_records(1)
        assert record.accepted and record.client_name == b"sensor7._device.example.com"

    result = connect("127.0.0.1", project_server_port, client_name="sensor7._device.example.com",
                     cert_pem=client_cert_pem, key_pem=client_key_pem)
    assert result.accepted and result.reply == b"ping\n"      # if the handler echoes
    bad = connect(..., raw_extension_data=b"\x05a")            # malformed ClientName
    assert not bad.accepted and bad.alert == "decode_error"    # TC-P2 (digest section 8.1)

Not supported: raw public keys (tlslite-ng has no RFC 7250 certificate type), TLS 1.2, session
resumption (the server sends no tickets; the client never offers a PSK), post-handshake
authentication.

Wire format (TLS 1.3 only; the peer never negotiates anything else)
-------------------------------------------------------------------
- Extension type: ``codepoint`` (default :data:`DEFAULT_CODEPOINT` = 0xFFDC, private use).
- Server -> client, in the CertificateRequest: ``extension_data`` = a zero-length ClientName, the
  single byte ``00`` (TV-EXT-1: ``TT TT 00 01 00``). :func:`run_server` can send other bytes
  (``cr_extension_data=b""`` gives the legacy tls-clientid-07 form ``TT TT 00 00``).
- Client -> server, in the client Certificate, in the extensions of the FIRST CertificateEntry
  only: ``extension_data`` = ``opaque ClientName<1..2^8-1>``, that is one length octet followed
  by the name in presentation format, ASCII, without the trailing dot (TV-EXT-2:
  ``sensor7._device.example.com`` -> ``TT TT 00 1c 1b 73656e...``). See :func:`encode_client_name`.
- The client sends it only when the CertificateRequest carried the extension (empty or ``00``
  accepted alike; any other content is ignored, the lenient choice of TC-P16).

Server: ``run_server(cert_pem, key_pem, codepoint=0xFFDC, host="127.0.0.1", **options)``
----------------------------------------------------------------------------------------
Starts a threaded blocking TLS 1.3 server on ``host``, on a free port, and returns a
:class:`PeerServer` (``.host``, ``.port``, ``.records``, ``.wait_for_records(n)``, ``.stop()``;
also a context manager that stops on exit). ``cert_pem`` (the server chain, leaf first) and
``key_pem`` (PKCS#8 or traditional PEM; P-256, Ed25519 or RSA) are ``bytes`` or ``str``.
Keyword options:

- ``request_extension=True``: put ``dane_clientid`` in the CertificateRequest.
- ``cr_extension_data=b"\\x00"``: its ``extension_data``.
- ``request_certificate=True``: send a CertificateRequest at all.
- ``strict=True``: apply the checks below; ``False`` records everything and refuses nothing
  (except a ``verify`` callback returning False).
- ``verify=None``: ``Callable[[ConnectionRecord], bool]``; called after the checks with the
  record; False -> ``handshake_failure``. Default: accept any certificate (the test decides by
  looking at ``records``). The peer never validates certificates itself.
- ``timeout=10.0``: socket timeout per connection, seconds.
- ``greeting=None``: bytes written to an accepted client before reading its line (for clients
  that read first); the echo follows.

Per connection, after the TLS 1.3 handshake (which proves possession of the client key), the
server decides in this order (``strict=True``); a refusal sends one fatal alert (encrypted under
the application keys, as OpenSSL does: in TLS 1.3 the client Certificate arrives after the
server's Finished) and closes:

1. no client certificate -> ``certificate_required``;
2. the extension in a CertificateEntry other than the first -> ``illegal_parameter`` (TC-P14);
3. the extension present although not requested -> ``unsupported_extension`` (TC-P15);
4. ``extension_data`` empty, truncated or with trailing bytes -> ``decode_error`` (TC-P2..P4);
5. zero-length ClientName -> ``handshake_failure`` (TC-P1);
6. name syntax (ASCII; labels ``[A-Za-z0-9_-]{1,63}``; no empty label, trailing dot, ``*``
   or ``\\``; DNS wire length <= 255) -> ``handshake_failure``. No IDNA decoding is attempted;
7. ``verify(record)`` False -> ``handshake_failure``.

An absent extension is NOT refused (the server records ``client_name=None``). When accepted, the
server reads one line (up to ``\\n`` or EOF, at most 64 KiB), writes the same bytes back and closes
with close_notify. The server keeps serving after any refusal or broken handshake. Each connection
appends one :class:`ConnectionRecord` to ``server.records``, in completion order:

- ``handshake_ok``: the TLS handshake completed;
- ``client_name``: the ClientName octets without their length octet, or None when the extension
  was absent or did not decode;
- ``extension_data``: the raw ``extension_data`` from the first entry, or None;
- ``extension_entries``: indices of the CertificateEntries that carried the extension;
- ``chain``: the client's DER certificates, leaf first;
- ``accepted``; ``alert_sent``: the alert name (e.g. ``"handshake_failure"``) or None;
- ``received``: the line read from the client; ``error``: text, or None.

``stop()`` closes the listener and every open connection and joins every thread it started (no
thread survives it; RuntimeError if one did).

Client: ``connect(host, port, *, client_name, cert_pem, key_pem, ...)``
---------------------------------------------------------------------
One blocking TLS 1.3 connection, returns a :class:`ClientResult`. Keyword options:

- ``client_name``: ``str`` (encoded as UTF-8, so a U-label goes out as raw UTF-8), ``bytes``
  (sent verbatim), or None (never send the extension). At most 255 octets
  (else ValueError: use ``raw_extension_data``).
- ``cert_pem`` / ``key_pem``: the client chain (leaf first) and key; both None -> the client
  answers the CertificateRequest with an empty Certificate (no extension can travel then).
- ``codepoint=0xFFDC``.
- ``send_extension=True``: False -> never send it, even when requested.
- ``raw_extension_data=None``: bytes sent as the whole ``extension_data`` instead of the encoded
  name, for malformed cases (``b""``, ``b"\\x00"``, wrong length octet, > 255 octets, non-ASCII).
- ``force_extension=False``: send it even when the CertificateRequest did not carry it (TC-P15).
- ``extension_entry=0``: index of the CertificateEntry that carries it (1 -> TC-P14; needs a
  chain of at least two certificates).
- ``server_name=None`` (SNI), ``message=b"ping\\n"``, ``timeout=10.0``.

It sends ``message`` and reads once. ``accepted`` is True only when the handshake completed and
the first read returned application data (TLS 1.3: a server refuses the client certificate after
the client's handshake is done, so a refusal shows as an alert on that first read). ``alert`` is
the description name of a fatal alert received (e.g. ``"handshake_failure"``) and ``alert_code``
its number; ``handshake_ok`` whether the client's side of the handshake completed; ``reply`` the
bytes read (up to ``\\n`` or EOF); ``server_requested_extension`` and
``server_extension_data`` describe the CertificateRequest (False/None when none came);
``sent_extension_data`` what the client put in its Certificate (None: not sent);
``server_chain`` the server's DER chain; ``error`` the text of any other failure (EOF without an
alert, reset, timeout, local alert).
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():
    # tlslite/__init__ imports its asyncore integration, deprecated since Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from tlslite import (  # type: ignore[import-untyped]
        HandshakeSettings,
        TLSConnection,
        X509CertChain,
        parsePEMKey,
    )
    from tlslite.constants import AlertDescription  # type: ignore[import-untyped]
    from tlslite.errors import (  # type: ignore[import-untyped]
        TLSAbruptCloseError,
        TLSError,
        TLSLocalAlert,
        TLSRemoteAlert,
    )
    from tlslite.extensions import TLSExtension  # type: ignore[import-untyped]
    from tlslite.messages import Certificate, CertificateRequest  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

DEFAULT_CODEPOINT = 0xFFDC
TLS13 = (3, 4)
MAX_LINE = 65536
_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}")

__all__ = [
    "DEFAULT_CODEPOINT",
    "ClientResult",
    "ConnectionRecord",
    "ExtensionDecodeError",
    "PeerServer",
    "check_client_name",
    "connect",
    "decode_client_name",
    "encode_client_name",
    "run_server",
]


# --------------------------------------------------------------------------- wire format


class ExtensionDecodeError(ValueError):
    """extension_data is not a well-formed ``opaque ClientName<0..2^8-1>``."""


def encode_client_name(name: str | bytes) -> bytes:
    """``extension_data`` for the client's Certificate: one length octet, then the name."""
    data = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if len(data) > 255:
        raise ValueError(f"ClientName of {len(data)} octets does not fit a uint8 length")
    return bytes([len(data)]) + data


def decode_client_name(extension_data: bytes) -> bytes:
    """The ClientName octets in ``extension_data`` (may be empty: zero-length name).

    Raises ExtensionDecodeError for empty data, a truncated name or trailing bytes."""
    if not extension_data:
        raise ExtensionDecodeError("empty extension_data (no ClientName length)")
    length = extension_data[0]
    if len(extension_data) != 1 + length:
        raise ExtensionDecodeError(
            f"ClientName length {length} but {len(extension_data) - 1} octets follow"
        )
    return bytes(extension_data[1:])


def check_client_name(name: bytes) -> str | None:
    """None when ``name`` is an acceptable ClientName, else the reason (strict syntax only)."""
    if not name:
        return "zero-length ClientName"
    if not name.isascii():
        return "non-ASCII ClientName"
    labels = name.split(b".")
    for label in labels:
        if not label:
            return "empty label (leading, trailing or double dot)"
        if not _LABEL.fullmatch(label):
            return f"bad label {label[:70]!r}"
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        return "DNS wire form longer than 255 octets"
    return None


def _alert_name(code: int) -> str:
    return str(AlertDescription.toStr(code))


def _load_chain(cert_pem: bytes | str) -> Any:
    text = cert_pem.decode("ascii") if isinstance(cert_pem, bytes) else cert_pem
    chain = X509CertChain()
    chain.parsePemList(text)
    if not chain.x509List:
        raise ValueError("no certificate in cert_pem")
    return chain


def _load_key(key_pem: bytes | str) -> Any:
    text = key_pem.decode("ascii") if isinstance(key_pem, bytes) else key_pem
    return parsePEMKey(text, private=True, implementations=["python"])


def _settings() -> Any:
    settings = HandshakeSettings()
    settings.minVersion = TLS13
    settings.maxVersion = TLS13
    # tlslite-ng's client fails against OpenSSL 3.0 when it compresses its certificate.
    settings.certificate_compression_send = []
    settings.ticket_count = 0
    return settings


def _chain_der(chain: Any) -> list[bytes]:
    if chain is None:
        return []
    return [bytes(x.writeBytes()) for x in chain.x509List]


def _read_line(conn: Any) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_LINE:
        chunk = conn.read(max=MAX_LINE - len(data), min=1)
        if not chunk:
            break
        data += bytes(chunk)
    return data


# --------------------------------------------------------------------------- server


@dataclass
class ConnectionRecord:
    """What the server saw on one connection (see the module docstring)."""

    handshake_ok: bool = False
    client_name: bytes | None = None
    extension_data: bytes | None = None
    extension_entries: tuple[int, ...] = ()
    chain: list[bytes] = field(default_factory=list)
    accepted: bool = False
    alert_sent: str | None = None
    received: bytes = b""
    error: str | None = None


class _ServerConnection(TLSConnection):  # type: ignore[misc]
    """Adds dane_clientid to the TLS 1.3 CertificateRequest; keeps the client Certificate."""

    def __init__(self, sock: socket.socket, codepoint: int, cr_data: bytes | None) -> None:
        super().__init__(sock)
        self._dance_codepoint = codepoint
        self._dance_cr_data = cr_data
        self.dance_client_certificate: Any = None

    def _queue_message(self, msg: Any) -> Any:
        if (
            isinstance(msg, CertificateRequest)
            and self.version >= TLS13
            and self._dance_cr_data is not None
        ):
            ext = TLSExtension(extType=self._dance_codepoint).create(bytearray(self._dance_cr_data))
            msg.extensions = [*(msg.extensions or []), ext]
        return super()._queue_message(msg)

    def _getMsg(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for result in super()._getMsg(*args, **kwargs):
            if isinstance(result, Certificate):
                self.dance_client_certificate = result
            yield result


class PeerServer:
    """A running tlslite-ng test server; see :func:`run_server`."""

    def __init__(
        self,
        cert_pem: bytes | str,
        key_pem: bytes | str,
        codepoint: int,
        host: str,
        *,
        request_extension: bool,
        cr_extension_data: bytes,
        request_certificate: bool,
        strict: bool,
        verify: Callable[[ConnectionRecord], bool] | None,
        timeout: float,
        greeting: bytes | None,
    ) -> None:
        self._chain = _load_chain(cert_pem)
        self._key = _load_key(key_pem)
        self.codepoint = codepoint
        self.request_extension = request_extension
        self._cr_data = bytes(cr_extension_data) if request_extension else None
        self._request_certificate = request_certificate
        self._strict = strict
        self._verify = verify
        self._timeout = timeout
        self._greeting = greeting
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: list[ConnectionRecord] = []
        self._open: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._listener = socket.create_server((host, 0))
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"tlslite-peer-{self.port}", daemon=True
        )
        self._acceptor.start()

    # public -----------------------------------------------------------------

    @property
    def records(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._records)

    def wait_for_records(self, count: int, timeout: float = 10.0) -> list[ConnectionRecord]:
        """Block until at least ``count`` connections were recorded; return all records."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._records) >= count, timeout):
                raise TimeoutError(f"{len(self._records)} of {count} connections recorded")
            return list(self._records)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            sockets = list(self._open)
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=self._timeout + 5)
        alive = [t.name for t in [self._acceptor, *threads] if t.is_alive()]
        if alive:
            raise RuntimeError(f"tlslite peer threads still running: {alive}")

    def __enter__(self) -> PeerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # internals --------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if not ready:
                    continue
                sock, _ = self._listener.accept()
            except (OSError, ValueError):
                if self._stopping.is_set():
                    return
                continue
            thread = threading.Thread(
                target=self._serve_one, args=(sock,), name=f"tlslite-conn-{self.port}", daemon=True
            )
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                self._open.add(sock)
                self._threads.add(thread)
            thread.start()

    def _serve_one(self, sock: socket.socket) -> None:
        record = ConnectionRecord()
        try:
            self._handle(sock, record)
        except Exception as exc:  # record everything: the test decides
            record.error = record.error or f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._changed:
                self._open.discard(sock)
                self._records.append(record)
                self._threads.discard(threading.current_thread())
                self._changed.notify_all()

    def _handle(self, sock: socket.socket, record: ConnectionRecord) -> None:
        sock.settimeout(self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _ServerConnection(sock, self.codepoint, self._cr_data)
        try:
            conn.handshakeServer(
                certChain=self._chain,
                privateKey=self._key,
                reqCert=self._request_certificate,
                settings=_settings(),
            )
        except TLSLocalAlert as exc:
            record.alert_sent = _alert_name(exc.description)
            record.error = f"handshake: {exc}"
            return
        except TLSRemoteAlert as exc:
            record.error = f"handshake: client sent alert {_alert_name(exc.description)}"
            return
        except (TLSError, OSError) as exc:
            record.error = f"handshake: {type(exc).__name__}: {exc}"
            return
        record.handshake_ok = True
        self._inspect(conn.dance_client_certificate, record)
        refusal = self._decide(record)
        if refusal is not None:
            alert, reason = refusal
            record.alert_sent = _alert_name(alert)
            record.error = reason
            with contextlib.suppress(TLSError, OSError):
                for _ in conn._sendError(alert, reason):
                    pass
            return
        record.accepted = True
        try:
            if self._greeting:
                conn.write(self._greeting)
            record.received = _read_line(conn)
            conn.write(record.received)
            conn.close()
        except TLSRemoteAlert as exc:
            record.error = f"client sent alert {_alert_name(exc.description)}"
        except (TLSError, OSError) as exc:
            record.error = f"after handshake: {type(exc).__name__}: {exc}"

    def _inspect(self, certificate: Any, record: ConnectionRecord) -> None:
        if certificate is None:
            return
        entries = list(certificate.certificate_list or [])
        record.chain = [bytes(e.certificate.writeBytes()) for e in entries]
        found: list[int] = []
        for index, entry in enumerate(entries):
            for ext in entry.extensions or []:
                if ext.extType == self.codepoint:
                    found.append(index)
                    if index == 0 and record.extension_data is None:
                        record.extension_data = bytes(ext.extData)
        record.extension_entries = tuple(found)
        if record.extension_data is not None:
            with contextlib.suppress(ExtensionDecodeError):
                record.client_name = decode_client_name(record.extension_data)

    def _decide(self, record: ConnectionRecord) -> tuple[int, str] | None:
        if self._strict:
            if self._request_certificate and not record.chain:
                return AlertDescription.certificate_required, "no client certificate"
            if any(i != 0 for i in record.extension_entries):
                return AlertDescription.illegal_parameter, "dane_clientid outside the first entry"
            if record.extension_entries and not self.request_extension:
                return AlertDescription.unsupported_extension, "dane_clientid not requested"
            if record.extension_data is not None:
                try:
                    name = decode_client_name(record.extension_data)
                except ExtensionDecodeError as exc:
                    return AlertDescription.decode_error, str(exc)
                reason = check_client_name(name)
                if reason is not None:
                    return AlertDescription.handshake_failure, reason
        if self._verify is not None and not self._verify(record):
            return AlertDescription.handshake_failure, "refused by the verify callback"
        return None


def run_server(
    cert_pem: bytes | str,
    key_pem: bytes | str,
    codepoint: int = DEFAULT_CODEPOINT,
    host: str = "127.0.0.1",
    *,
    request_extension: bool = True,
    cr_extension_data: bytes = b"\x00",
    request_certificate: bool = True,
    strict: bool = True,
    verify: Callable[[ConnectionRecord], bool] | None = None,
    timeout: float = 10.0,
    greeting: bytes | None = None,
) -> PeerServer:
    """Start the tlslite-ng dane_clientid test server (see the module docstring)."""
    return PeerServer(
        cert_pem,
        key_pem,
        codepoint,
        host,
        request_extension=request_extension,
        cr_extension_data=cr_extension_data,
        request_certificate=request_certificate,
        strict=strict,
        verify=verify,
        timeout=timeout,
        greeting=greeting,
    )


# --------------------------------------------------------------------------- client


@dataclass
class ClientResult:
    """Outcome of :func:`connect` (see the module docstring)."""

    accepted: bool = False
    handshake_ok: bool = False
    alert: str | None = None
    alert_code: int | None = None
    reply: bytes = b""
    server_requested_extension: bool = False
    server_extension_data: bytes | None = None
    sent_extension_data: bytes | None = None
    server_chain: list[bytes] = field(default_factory=list)
    error: str | None = None


class _ClientConnection(TLSConnection):  # type: ignore[misc]
    """Puts dane_clientid in a CertificateEntry when the CertificateRequest asked for it."""

    def __init__(
        self,
        sock: socket.socket,
        codepoint: int,
        extension_data: bytes | None,
        force: bool,
        entry: int,
    ) -> None:
        super().__init__(sock)
        self._dance_codepoint = codepoint
        self._dance_data = extension_data
        self._dance_force = force
        self._dance_entry = entry
        self.dance_request: Any = None
        self.dance_sent: bytes | None = None

    def dance_requested_data(self) -> bytes | None:
        if self.dance_request is None:
            return None
        for ext in self.dance_request.extensions or []:
            if ext.extType == self._dance_codepoint:
                return bytes(ext.extData)
        return None

    def _getMsg(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for result in super()._getMsg(*args, **kwargs):
            if isinstance(result, CertificateRequest):
                self.dance_request = result
            yield result

    def _create_cert_msg(self, peer: str, *args: Any, **kwargs: Any) -> Any:
        msg = super()._create_cert_msg(peer, *args, **kwargs)
        if peer != "client" or self._dance_data is None:
            return msg
        requested = self.dance_requested_data() is not None
        if not (requested or self._dance_force):
            return msg
        if type(msg) is not Certificate:
            raise TLSError("dane_clientid cannot be added to a compressed certificate")
        entries = msg.certificate_list or []
        if len(entries) <= self._dance_entry:
            return msg  # no certificate (or too short a chain): nothing can carry it
        ext = TLSExtension(extType=self._dance_codepoint).create(bytearray(self._dance_data))
        entries[self._dance_entry].extensions = [ext]
        self.dance_sent = bytes(self._dance_data)
        return msg


def connect(
    host: str,
    port: int,
    *,
    client_name: str | bytes | None,
    cert_pem: bytes | str | None,
    key_pem: bytes | str | None,
    codepoint: int = DEFAULT_CODEPOINT,
    send_extension: bool = True,
    raw_extension_data: bytes | None = None,
    force_extension: bool = False,
    extension_entry: int = 0,
    server_name: str | None = None,
    message: bytes = b"ping\n",
    timeout: float = 10.0,
) -> ClientResult:
    """One TLS 1.3 connection presenting the certificate with dane_clientid (module docstring)."""
    if (cert_pem is None) != (key_pem is None):
        raise ValueError("give both cert_pem and key_pem, or neither")
    chain = _load_chain(cert_pem) if cert_pem is not None else None
    key = _load_key(key_pem) if key_pem is not None else None
    data: bytes | None = None
    if send_extension:
        if raw_extension_data is not None:
            data = bytes(raw_extension_data)
        elif client_name is not None:
            data = encode_client_name(client_name)
    result = ClientResult()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _ClientConnection(sock, codepoint, data, force_extension, extension_entry)
        try:
            conn.handshakeClientCert(
                certChain=chain, privateKey=key, settings=_settings(), serverName=server_name
            )
            result.handshake_ok = True
            try:
                conn.write(message)
            except TLSRemoteAlert:
                raise
            except (TLSError, OSError) as exc:
                # A refusing server may already have closed: its alert can still be read.
                result.error = f"write: {type(exc).__name__}: {exc}"
            result.reply = _read_line(conn)
            result.accepted = bool(result.reply) and result.error is None
            if not result.reply:
                result.error = result.error or "connection closed without a reply"
        except TLSRemoteAlert as exc:
            result.alert_code = int(exc.description)
            result.alert = _alert_name(exc.description)
        except TLSLocalAlert as exc:
            result.error = f"local alert {_alert_name(exc.description)}: {exc.message}"
        except TLSAbruptCloseError as exc:
            result.error = f"abrupt close: {exc}"
        except (TLSError, OSError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.server_requested_extension = conn.dance_requested_data() is not None
            result.server_extension_data = conn.dance_requested_data()
            result.sent_extension_data = conn.dance_sent
            session = getattr(conn, "session", None)
            server_chain = getattr(session, "serverCertChain", None) if session else None
            result.server_chain = _chain_der(server_chain)
            with contextlib.suppress(Exception):
                conn.sock.close()
    log.debug("tlslite peer client: %s", result)
    return result
