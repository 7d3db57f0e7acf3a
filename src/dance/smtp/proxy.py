"""SMTP relay client authentication with DANCE (architecture Example 10): ``dance smtp-proxy``.

The proxy speaks SMTP to the sending MTA, terminates STARTTLS itself with the DANCE server
context of :mod:`dance.tls` (TLS 1.3, ``dane_clientid``, the same :class:`DanceServer` decision
and pending-lookup logic as ``dance proxy``), and only once the client is authenticated opens a
connection to the backend MTA (Postfix on loopback). It then announces the client with
``XCLIENT ADDR=... NAME=... HELO=... PROTO=ESMTP LOGIN=<identity>`` (Postfix:
``smtpd_authorized_xclient_hosts``; LOGIN sets ``sasl_username`` so ``permit_sasl_authenticated``
lets it relay) and relays the transaction command by command.

Everything the client sends goes through :class:`dance.smtp.framing.Framer` (sans-I/O): a line
ends only at CRLF, a bare CR, a bare LF or a NUL anywhere (commands and message text) ends the
session with a 5xx reply, lines are limited (512 octets for commands, 1000 for text, with CRLF)
and the message ends only at CRLF ``.`` CRLF. Every line the backend receives is a line the
proxy has checked, byte for byte as the client sent it, so both read the same lines and the same
end of data (no SMTP smuggling).

Security decisions:

* a client refused by DANCE (TLS handshake failure, or a pending lookup that fails) never causes
  a backend connection;
* with ``require_tls`` (default) MAIL before STARTTLS is answered ``530 5.7.0 Must issue a
  STARTTLS command first``; plaintext sessions are forwarded (without LOGIN, so Postfix applies
  its normal no-relay restrictions) only when ``require_tls`` is off and
  ``allow_unauthenticated`` is on;
* only MAIL, RCPT, DATA and RSET reach the backend; the client's own ``XCLIENT``, ``XFORWARD``,
  ``AUTH``, ``BDAT``, a second ``STARTTLS`` and every other verb are answered by the proxy; EHLO
  and HELO are always answered by the proxy; MAIL accepts only the SIZE and BODY parameters
  (never ``AUTH=``), RCPT none;
* PIPELINING is not advertised and not tolerated: a client that sends anything before the reply
  to its last command (plaintext after STARTTLS included: CVE-2011-0411) is refused and its
  session ends; what it sent is never carried over;
* limits: connections in total and per client address, a deadline for each command line, each
  message line and the whole session, the TLS handshake and the backend connection; refusals
  are counted by reason in :class:`SmtpStats`. A client that goes away at any moment (during
  the handshake, the DNS wait, the backend connection or the message) releases its task and its
  backend connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

from dance.auth import Authenticator
from dance.identity import Identity
from dance.service.observe import Observer
from dance.service.relay import SessionSlots, host_port, peer_host
from dance.smtp.framing import (
    DEFAULT_MAX_COMMAND,
    DEFAULT_MAX_LINE,
    Data,
    EndOfData,
    Event,
    Framer,
    Line,
    Violation,
)
from dance.tls.bridge import CONNECTION_PEER, DEFAULT_CODEPOINT, TLSStats
from dance.tls.server import DanceServer

__all__ = [
    "DEFAULT_MAX_SIZE",
    "SmtpProxy",
    "SmtpProxyConfig",
    "SmtpProxyError",
    "SmtpStats",
    "start_smtp_proxy",
    "xtext",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
MAX_COMMAND = DEFAULT_MAX_COMMAND  # RFC 5321 4.5.3.1.4 (kept for compatibility)
MAX_LINE = 64 * 1024  # the StreamReader limit and read size (not a line limit any more)
_READ = 64 * 1024
_CLIENT_SNDBUF = 32 * 1024  # the kernel's send buffer for a client connection (Linux doubles it)
_FORBIDDEN = {b"XCLIENT", b"XFORWARD", b"AUTH", b"BDAT"}
_RELAYED = {b"MAIL", b"RCPT", b"DATA", b"RSET"}
_SYNC_REPLY = "554 5.5.0 Error: SMTP protocol synchronization (PIPELINING is not offered)"


class SmtpProxyError(ValueError):
    """Invalid SMTP proxy configuration."""


class BackendError(Exception):
    """The backend MTA did not accept the session setup (greeting, EHLO or XCLIENT)."""


class _SessionEnd(Exception):
    """The session is over (its last reply, if any, has been sent)."""


class _ClientGone(_SessionEnd):
    """The client closed its side."""


@dataclass(frozen=True)
class SmtpProxyConfig:
    """Settings of one proxy. Timeouts are in seconds; lengths include CRLF."""

    backend: tuple[str, int]
    hostname: str = "dance-smtp-proxy"
    max_size: int = DEFAULT_MAX_SIZE
    require_tls: bool = True
    allow_unauthenticated: bool = False
    connect_timeout: float = 5.0  # backend TCP connect
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2.7: each command line (also idle time)
    tls_timeout: float = 10.0  # the TLS handshake after STARTTLS
    data_timeout: float = 180.0  # RFC 5321 4.5.3.2.6: each message line (or block of lines)
    backend_timeout: float = 300.0  # each backend reply (greeting, XCLIENT, end of data, ...)
    session_timeout: float = 3600.0  # the whole session, whatever it does
    max_connections: int = 256  # client sessions at once
    max_per_address: int = 32  # client sessions at once from one IP address
    max_command_length: int = DEFAULT_MAX_COMMAND
    max_line_length: int = DEFAULT_MAX_LINE

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise SmtpProxyError("the SIZE limit must be positive")
        host = self.hostname
        if not host or not host.isascii() or any(c.isspace() for c in host):
            raise SmtpProxyError(f"bad hostname {self.hostname!r}")
        if self.require_tls and self.allow_unauthenticated:
            raise SmtpProxyError("--allow-unauthenticated needs --no-require-tls")
        for name in (
            "connect_timeout",
            "command_timeout",
            "tls_timeout",
            "data_timeout",
            "backend_timeout",
            "session_timeout",
        ):
            if not 0 < getattr(self, name) < math.inf:
                raise SmtpProxyError(f"--{name.replace('_', '-')} must be a positive number")
        if self.max_connections < 1 or self.max_per_address < 1:
            raise SmtpProxyError("connection limits must be at least 1")
        if not DEFAULT_MAX_COMMAND <= self.max_command_length <= 65536:
            raise SmtpProxyError("the command length limit must be 512 to 65536 (RFC 5321)")
        if not DEFAULT_MAX_LINE <= self.max_line_length <= 65536:
            raise SmtpProxyError("the line length limit must be 1000 to 65536 (RFC 5321)")


@dataclass
class SmtpStats:
    """Counters of one proxy. ``refused`` counts refusals and forced ends by reason
    (``max-connections``, ``per-address``, ``bare-cr``, ``bare-lf``, ``nul``,
    ``command-too-long``, ``line-too-long``, ``pipelining``, ``starttls-pipelined``,
    ``timeout-command``, ``timeout-data``, ``timeout-session``, ``timeout-tls``,
    ``timeout-backend``, ``timeout-write``, ``backend-unavailable``, ``mail-parameter``,
    ``rcpt-parameter``);
    ``refused_commands`` counts refused verbs (``XCLIENT``, ``AUTH``, ...)."""

    sessions: int = 0
    active: int = 0  # sessions in progress
    tls_started: int = 0
    tls_refused: int = 0
    authenticated: int = 0
    backend_connections: int = 0
    backend_open: int = 0  # backend connections open now
    backend_failures: int = 0
    messages: int = 0  # messages the backend accepted (2xx after end of data)
    client_closed: int = 0  # sessions the client ended by closing (not by QUIT)
    refused_commands: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, verb: str) -> None:
        self.refused_commands[verb] = self.refused_commands.get(verb, 0) + 1

    def count(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def xtext(value: str) -> str:
    """RFC 3461 xtext: printable ASCII except ``+`` and ``=``; everything else ``+HH``."""
    out = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def _xclient_addr(address: str) -> str:
    return f"IPV6:{address}" if ":" in address else address


def _printable_token(arg: bytes) -> bool:
    return bool(arg) and all(33 <= b <= 126 for b in arg)


def _path_end(rest: bytes) -> int:
    """Index of the ``>`` that closes the reverse- or forward-path at the start of ``rest``
    (quoted strings and backslash escapes honoured), or -1."""
    if not rest.startswith(b"<"):
        return -1
    quoted = escaped = False
    for i in range(1, len(rest)):
        c = rest[i]
        if escaped:
            escaped = False
        elif c == 0x5C:  # backslash
            escaped = True
        elif c == 0x22:  # double quote
            quoted = not quoted
        elif c == 0x3E and not quoted:  # ">"
            return i
    return -1


def check_envelope(verb: bytes, arg: bytes, max_size: int) -> str | None:
    """None when a MAIL/RCPT argument is acceptable, else the reply refusing it.

    MAIL: ``FROM:<path>`` and only the parameters advertised (``SIZE=n``, ``BODY=7BIT`` or
    ``BODY=8BITMIME``); RCPT: ``TO:<path>`` and no parameter. ``AUTH=`` is refused anywhere in
    the line: it would let a client name another "authenticated sender" to the backend."""
    if b"AUTH=" in arg.upper():
        return "555 5.5.4 Error: the AUTH parameter is not supported"
    prefix = b"FROM:" if verb == b"MAIL" else b"TO:"
    if not arg.upper().startswith(prefix):
        return f"501 5.5.4 Syntax: {verb.decode()} {prefix.decode()}<address>"
    rest = arg[len(prefix) :].lstrip(b" ")
    end = _path_end(rest)
    if end < 0:
        return f"501 5.1.7 Error: bad address syntax (use {prefix.decode()}<address>)"
    params = rest[end + 1 :]
    if params and not params.startswith(b" "):
        return "501 5.5.4 Error: bad parameter syntax"
    for param in params.split():
        key, _, value = param.partition(b"=")
        key = key.upper()
        if verb == b"MAIL" and key == b"SIZE" and value.isdigit() and len(value) <= 20:
            if int(value) > max_size:
                return "552 5.3.4 Error: message size exceeds fixed limit"
            continue
        if verb == b"MAIL" and key == b"BODY" and value.upper() in (b"7BIT", b"8BITMIME"):
            continue
        return "555 5.5.4 Error: unsupported parameter " + param[:40].decode("ascii", "replace")
    return None


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    """One (possibly multi-line) SMTP reply from the backend: (code, raw lines with CRLF)."""
    lines: list[bytes] = []
    while True:
        line = await reader.readline()
        if not line:
            raise BackendError("backend closed the connection")
        lines.append(line)
        if len(line) < 4 or not line[:3].isdigit() or len(lines) > 100:
            raise BackendError(f"malformed reply {line[:80]!r}")
        if line[3:4] != b"-":
            return int(line[:3]), lines


class _Session:
    """One client connection."""

    def __init__(
        self,
        proxy: SmtpProxy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:
        self.proxy = proxy
        self.stats = proxy.stats
        self.config = proxy.config
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.peer_text = peer  # address:port for the access log (set by the proxy)
        self.accepted_at = time.monotonic()
        self.tls = False
        self.identity: Identity | None = None
        self.helo: str | None = None
        self.backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.framer = self._new_framer()
        self.eof = False

    def _new_framer(self) -> Framer:
        return Framer(
            max_command=self.config.max_command_length, max_line=self.config.max_line_length
        )

    # -- talking to the client ----------------------------------------------------------------

    async def reply(self, text: str) -> None:
        self.writer.write(text.encode("ascii", "replace") + b"\r\n")
        async with asyncio.timeout(self.config.command_timeout):  # a client that never reads
            await self.writer.drain()

    async def end(self, reason: str, text: str | None) -> NoReturn:
        """Count ``reason``, send the last reply (if the client still listens), end."""
        self.stats.count(reason)
        log.info("SMTP session from %s ended: %s", self.peer, reason)
        self.abort_backend()  # before anything else: a half-sent message must never be queued
        if text is not None:
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await self.reply(text)
        raise _SessionEnd(reason)

    async def _fill(self) -> None:
        data = await self.reader.read(_READ)
        if data:
            self.framer.feed(data)
        else:
            self.eof = True

    async def next_event(self, timeout: float, what: str) -> Line | Data | EndOfData:
        """The next line (or block of message lines) from the client, within ``timeout``."""
        event: Event | None = None
        try:
            async with asyncio.timeout(timeout):
                while (event := self.framer.next_event()) is None:
                    if self.eof:
                        raise _ClientGone("closed")
                    await self._fill()
        except TimeoutError:
            await self.end(f"timeout-{what}", f"421 4.4.2 {self.config.hostname} Error: timeout")
        if isinstance(event, Violation):
            await self.end(event.reason, event.reply)
        assert event is not None and not isinstance(event, Violation)
        return event

    async def watch(
        self,
        op: Awaitable[T],
        timeout: float | None,
        *,
        allow_input: bool,
        discard: Callable[[T], object] | None = None,
    ) -> T:
        """Await ``op`` (backend work, the DNS wait) while watching the client.

        If the client closes, ``op`` is cancelled at once. Bytes the client sends meanwhile are
        buffered (``allow_input``: after the TLS handshake, the client speaks before it knows
        its verdict) or end the session as pipelining (the client did not wait for a reply).
        ``discard`` disposes of a result that came too late to be used (``op`` finished as the
        session ended: a backend connection made as the client left is closed, not dropped)."""
        task = asyncio.ensure_future(op)
        returned = False
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if self.eof:
                        raise _ClientGone("closed")
                    if self.framer.pending >= _READ:
                        # enough buffered: stop reading (TCP pushes back on the client) and
                        # just wait for op, so a flood during a slow backend costs no memory
                        result = await task
                        returned = True
                        return result
                    reading = asyncio.ensure_future(self._fill())
                    try:
                        await asyncio.wait({task, reading}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        if not reading.done():
                            reading.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await reading
                    if reading.done() and not reading.cancelled():
                        reading.result()  # the client's connection errors end the session
                        if self.eof:
                            raise _ClientGone("closed")
                        if not allow_input:
                            await self.end("pipelining", _SYNC_REPLY)
                    if task.done():
                        returned = True
                        return task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if (
                discard is not None
                and not returned
                and task.done()
                and not task.cancelled()
                and task.exception() is None
            ):
                discard(task.result())

    def capabilities(self, greet: str) -> str:
        caps = [f"{self.config.hostname} greets {greet}", f"SIZE {self.config.max_size}"]
        caps += ["8BITMIME", "ENHANCEDSTATUSCODES"]
        if not self.tls:
            caps.append("STARTTLS")
        return "\r\n".join(
            f"250{' ' if i == len(caps) - 1 else '-'}{c}" for i, c in enumerate(caps)
        )

    # -- the command loop -----------------------------------------------------------------------

    async def run(self) -> None:
        await self.reply(f"220 {self.config.hostname} ESMTP dance smtp-proxy")
        while True:
            event = await self.next_event(self.config.command_timeout, "command")
            assert isinstance(event, Line)
            body = event.text
            parts = body.split(None, 1)
            verb = parts[0].upper() if parts else b""
            if self.framer.pending:
                # the client did not wait for our reply: nothing it sent ahead is carried over
                if verb == b"STARTTLS":
                    await self.end("starttls-pipelined", "501 5.5.4 Error: data after STARTTLS")
                await self.end("pipelining", _SYNC_REPLY)
            arg = parts[1].strip() if len(parts) > 1 else b""
            if not await self.command(verb, arg, body):
                return

    async def command(self, verb: bytes, arg: bytes, body: bytes) -> bool:
        """Handle one command line; False when the session ends normally (QUIT)."""
        if verb in (b"EHLO", b"HELO"):
            if not _printable_token(arg):
                await self.reply(f"501 5.5.4 Syntax: {verb.decode()} hostname")
                return True
            self.helo = arg.decode("ascii")
            if verb == b"EHLO":
                await self.reply(self.capabilities(self.helo))
            else:
                await self.reply(f"250 {self.config.hostname}")
            if self.backend is not None:  # a new EHLO resets the transaction
                await self.backend_command(b"RSET\r\n", echo=False)
        elif verb == b"STARTTLS":
            if self.tls:
                self.stats.refuse("STARTTLS")
                await self.reply("503 5.5.1 Error: TLS already active")
            elif arg:
                await self.reply("501 5.5.4 Syntax: STARTTLS")
            else:
                await self.start_tls()
        elif verb == b"QUIT":
            self.quit_backend()
            await self.reply("221 2.0.0 Bye")
            return False
        elif verb == b"NOOP":
            await self.reply("250 2.0.0 Ok")
        elif verb in _FORBIDDEN:
            self.stats.refuse(verb.decode("ascii", "replace"))
            log.info("refused %s from %s", verb.decode("ascii", "replace"), self.peer)
            await self.reply("502 5.5.1 Error: command not implemented")
        elif verb not in _RELAYED:
            await self.reply("502 5.5.2 Error: command not recognized")
        elif verb == b"RSET" and self.backend is None:
            await self.reply("250 2.0.0 Ok")
        elif verb == b"MAIL":
            await self.mail(arg, body)
        elif self.backend is None:
            await self.reply("503 5.5.1 Error: need MAIL command")
        elif verb == b"RCPT":
            problem = check_envelope(verb, arg, self.config.max_size)
            if problem is not None:
                self.stats.count("rcpt-parameter")
                await self.reply(problem)
            else:
                await self.backend_command(body + b"\r\n")
        elif verb == b"DATA":
            if arg:
                await self.reply("501 5.5.4 Syntax: DATA")
            elif await self.backend_command(b"DATA\r\n") == 354:
                await self.copy_message()
        else:  # RSET with a backend
            await self.backend_command(b"RSET\r\n")
        return True

    async def mail(self, arg: bytes, body: bytes) -> None:
        if self.helo is None:
            await self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return
        if not self.tls and self.config.require_tls:
            await self.reply("530 5.7.0 Must issue a STARTTLS command first")
            return
        if self.identity is None and not self.config.allow_unauthenticated:
            await self.reply("530 5.7.0 Authentication required")
            return
        problem = check_envelope(b"MAIL", arg, self.config.max_size)
        if problem is not None:
            self.stats.count("mail-parameter")
            await self.reply(problem)
            return
        if self.backend is None:
            await self.open_backend()
        await self.backend_command(body + b"\r\n")

    async def start_tls(self) -> None:
        """Answer STARTTLS, upgrade, authenticate; ends the session when TLS or DANCE fails."""
        await self.reply("220 2.0.0 Ready to start TLS")
        # Plaintext that arrived after STARTTLS would otherwise be read as if it came through
        # TLS (CVE-2011-0411). The StreamReader's buffer is checked after our reply is drained:
        # from here to the moment start_tls pauses the transport nothing awaits, so no byte can
        # slip in between.
        if self.framer.pending or len(getattr(self.reader, "_buffer", b"")):
            await self.end("starttls-pipelined", None)
        self.framer.discard()
        try:
            # asyncio's own handshake timeout ends with a generic ConnectionAbortedError: our
            # deadline comes first (a cancelled start_tls closes the transport)
            # the SSL object made for this session records the client's address (access log)
            CONNECTION_PEER.set((self.peer_text, self.accepted_at))
            async with asyncio.timeout(self.config.tls_timeout):
                await self.writer.start_tls(
                    self.proxy.core.context, ssl_handshake_timeout=self.config.tls_timeout + 5
                )
        except TimeoutError:
            self.stats.tls_refused += 1
            await self.end("timeout-tls", None)
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            self.stats.tls_refused += 1
            log.info("TLS with %s failed: %r", self.peer, exc)
            raise _SessionEnd("tls") from None
        self.stats.tls_started += 1
        self.framer = self._new_framer()  # RFC 3207 4.2: nothing from before TLS carries over
        identity = await self.watch(
            self.proxy.core.identity_of(self.writer), None, allow_input=True
        )
        if identity is None:
            self.stats.tls_refused += 1
            log.info("client %s refused after TLS", self.peer)
            raise _SessionEnd("refused")
        self.stats.authenticated += 1
        self.identity = identity
        self.tls = True
        self.helo = None  # RFC 3207 4.2: forget everything, the client sends EHLO again
        log.info("client %s authenticated as %s", self.peer, identity.identity)

    # -- the backend ------------------------------------------------------------------------------

    async def open_backend(self) -> None:
        cfg = self.config
        try:
            b_reader, b_writer = await self.watch(
                asyncio.open_connection(*cfg.backend, limit=MAX_LINE),
                cfg.connect_timeout,
                allow_input=False,
                discard=lambda conn: conn[1].transport.abort(),
            )
        except (OSError, TimeoutError) as exc:
            self.stats.backend_failures += 1
            log.warning("backend %s:%d: %r", *cfg.backend, exc)
            await self.end("backend-unavailable", "451 4.3.0 Error: backend unavailable")
        self.backend = (b_reader, b_writer)
        self.stats.backend_connections += 1
        self.stats.backend_open += 1
        try:
            code, _ = await self.watch(
                _read_reply(b_reader), cfg.backend_timeout, allow_input=False
            )
            if code != 220:
                raise BackendError(f"greeting {code}")
            code, lines = await self._exchange(f"EHLO {cfg.hostname}\r\n".encode())
            if code != 250:
                raise BackendError(f"EHLO {code}")
            if not any(line[4:].upper().startswith(b"XCLIENT") for line in lines):
                raise BackendError("the backend does not offer XCLIENT to the proxy")
            attrs = [
                f"NAME={xtext('[UNAVAILABLE]')}",
                f"ADDR={xtext(_xclient_addr(self.peer))}",
                f"HELO={xtext(self.helo or '[UNAVAILABLE]')}",
                "PROTO=ESMTP",
            ]
            if self.identity is not None:
                attrs.append(f"LOGIN={xtext(self.identity.identity)}")
            code, _ = await self._exchange(f"XCLIENT {' '.join(attrs)}\r\n".encode())
            if code != 220:
                raise BackendError(f"XCLIENT {code}")
            code, _ = await self._exchange(f"EHLO {self.helo or cfg.hostname}\r\n".encode())
            if code != 250:
                raise BackendError(f"EHLO after XCLIENT {code}")
        except (BackendError, OSError, TimeoutError) as exc:
            self.stats.backend_failures += 1
            log.warning("backend %s:%d: %r", *cfg.backend, exc)
            await self.end("backend-unavailable", "451 4.3.0 Error: backend unavailable")

    async def _exchange(self, command: bytes) -> tuple[int, list[bytes]]:
        """Send one line to the backend and read its reply, watching the client meanwhile."""
        assert self.backend is not None
        b_reader, b_writer = self.backend

        async def exchange() -> tuple[int, list[bytes]]:
            b_writer.write(command)
            await b_writer.drain()
            return await _read_reply(b_reader)

        return await self.watch(exchange(), self.config.backend_timeout, allow_input=False)

    async def backend_command(self, command: bytes, *, echo: bool = True) -> int:
        """Relay one command and (with ``echo``) its reply; ends the session on backend loss."""
        try:
            code, lines = await self._exchange(command)
        except TimeoutError:
            await self.end("timeout-backend", "421 4.4.1 Error: backend timeout")
        except (BackendError, OSError) as exc:
            log.warning("backend session ended: %r", exc)
            await self.end("backend-unavailable", "421 4.3.0 Error: backend connection lost")
        if echo:
            self.writer.write(b"".join(lines))
            async with asyncio.timeout(self.config.command_timeout):
                await self.writer.drain()
        return code

    async def copy_message(self) -> None:
        """Relay the message text after a 354, line block by line block, then its end."""
        assert self.backend is not None
        b_writer = self.backend[1]
        self.framer.start_data()
        while True:
            event = await self.next_event(self.config.data_timeout, "data")
            if isinstance(event, Data):
                b_writer.write(event.raw)
                if b_writer.transport.get_write_buffer_size() > _READ:
                    try:
                        await self.watch(
                            b_writer.drain(), self.config.backend_timeout, allow_input=True
                        )
                    except (OSError, TimeoutError):
                        await self.end("backend-unavailable", "421 4.3.0 Error: backend lost")
                continue
            assert isinstance(event, EndOfData)
            if self.framer.pending:
                # the next command came before our reply: the message is dropped, not queued
                await self.end("pipelining", _SYNC_REPLY)
            code = await self.backend_command(b".\r\n")
            if 200 <= code < 300:
                self.stats.messages += 1
            return

    def quit_backend(self) -> None:
        """End the backend session politely (QUIT, then close after the buffer is sent)."""
        if self.backend is not None:
            b_writer = self.backend[1]
            with contextlib.suppress(OSError, RuntimeError):
                b_writer.write(b"QUIT\r\n")
            b_writer.close()
            self.backend = None
            self.stats.backend_open -= 1

    def abort_backend(self) -> None:
        """Drop the backend connection at once (an unfinished message is discarded)."""
        if self.backend is not None:
            self.backend[1].transport.abort()
            self.backend = None
            self.stats.backend_open -= 1

    def close(self) -> None:
        self.abort_backend()
        transport = self.writer.transport
        if transport.get_write_buffer_size():
            # replies the client has not taken (it does not read): a close would wait for it
            # for ever, with the connection and its descriptor held
            transport.abort()
        else:
            self.writer.close()


class SmtpProxy:
    """The listening SMTP proxy: ``core`` is the DANCE TLS decision (stats, pending lookups)."""

    def __init__(self, config: SmtpProxyConfig, core: DanceServer) -> None:
        self.config = config
        self.core = core
        self.stats = SmtpStats()
        self.server: asyncio.Server | None = None
        self.slots = SessionSlots(config.max_connections, config.max_per_address)

    def _refuse_connection(self, writer: asyncio.StreamWriter, reason: str) -> None:
        self.stats.count(reason)
        if self.core.observer is not None:
            self.core.observer.refused(reason)
        log.info("SMTP connection refused: %s", reason)
        with contextlib.suppress(OSError, RuntimeError):
            writer.write(
                f"421 4.7.0 {self.config.hostname} Error: too many connections\r\n".encode()
            )
        writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.sessions += 1
        peername = writer.get_extra_info("peername")  # captured at accept
        peer = peer_host(peername)
        refusal = self.slots.admit(peer)
        if refusal is not None:
            self._refuse_connection(writer, refusal)
            return
        self.stats.active = self.slots.active
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Replies are short: a fixed send buffer instead of the kernel's autotuned one (which
            # grows to megabytes on loopback), so a client that never reads fills it, and meets
            # the reply deadline (timeout-write), after kilobytes of replies, not megabytes.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _CLIENT_SNDBUF)
        session = _Session(self, reader, writer, peer)
        session.peer_text = host_port(peername)
        session.accepted_at = time.monotonic()
        if self.core.observer is not None:
            self.core.observer.opened()
        deadline = asyncio.timeout(self.config.session_timeout)
        try:
            async with deadline:
                await session.run()
        except TimeoutError:
            if deadline.expired():
                self.stats.count("timeout-session")
                with contextlib.suppress(Exception):
                    writer.write(b"421 4.4.2 Error: session time limit exceeded\r\n")
            else:  # a reply not taken within the command deadline: a client that never reads
                self.stats.count("timeout-write")
                log.info("SMTP session from %s ended: timeout-write", peer)
        except _ClientGone:
            self.stats.client_closed += 1
        except _SessionEnd:
            pass
        except asyncio.CancelledError:
            pass  # the proxy is closing
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.stats.client_closed += 1
            log.debug("SMTP session from %s ended: %r", peer, exc)
        except Exception:
            log.exception("SMTP session failed")
        finally:
            session.close()
            if self.core.observer is not None:
                self.core.observer.closed()
            self.slots.release(peer)
            self.stats.active = self.slots.active

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        assert self.server is not None
        return str(self.server.sockets[0].getsockname()[0])

    def close(self) -> None:
        """Stop listening and end every session (their backend connections are dropped)."""
        if self.server is not None:
            self.server.close()
        for task in list(self.slots.tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self.slots.tasks:
            await asyncio.gather(*list(self.slots.tasks), return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def serve_forever(self) -> None:
        assert self.server is not None
        await self.server.serve_forever()

    async def drain(self, timeout: float) -> int:
        """Stop accepting, let the sessions in progress finish for ``timeout`` seconds, then end
        those left (their unfinished messages are dropped with the backend connection); returns
        how many were cut."""
        if self.server is not None:
            self.server.close()
        return await self.slots.drain(timeout)

    async def __aenter__(self) -> SmtpProxy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_smtp_proxy(
    host: str | None,
    port: int,
    *,
    config: SmtpProxyConfig,
    cert: str | Path,
    key: str | Path,
    authenticator: Authenticator,
    codepoint: int = DEFAULT_CODEPOINT,
    san_fallback: bool = False,
    max_pending: int = 256,
    stats: TLSStats | None = None,
    observer: Observer | None = None,
    reuse_port: bool = False,
) -> SmtpProxy:
    """Start the SMTP proxy. Raises BridgeError (no usable OpenSSL), ValueError (bad codepoint),
    OSError/ssl.SSLError (cannot listen, unreadable certificate or key). ``observer`` gets the
    access log and metrics; ``reuse_port`` lets several processes share the port."""
    core = DanceServer(
        authenticator,
        cert=cert,
        key=key,
        codepoint=codepoint,
        san_fallback=san_fallback,
        max_pending=max_pending,
        stats=stats,
        observer=observer,
    )
    proxy = SmtpProxy(config, core)
    proxy.server = await asyncio.start_server(
        proxy.handle, host, port, limit=MAX_LINE, reuse_port=reuse_port or None
    )
    return proxy
