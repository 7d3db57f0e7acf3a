"""SMTP relay client authentication with DANCE (architecture Example 10): ``dance smtp-proxy``.

The proxy speaks SMTP to the sending MTA, terminates STARTTLS itself with the DANCE server
context of :mod:`dance.tls` (TLS 1.3, ``dane_clientid``, the same :class:`DanceServer` decision
and pending-lookup logic as ``dance proxy``), and only once the client is authenticated opens a
connection to the backend MTA (Postfix on loopback). It then announces the client with
``XCLIENT ADDR=... NAME=... HELO=... PROTO=ESMTP LOGIN=<identity>`` (Postfix:
``smtpd_authorized_xclient_hosts``; LOGIN sets ``sasl_username`` so ``permit_sasl_authenticated``
lets it relay) and relays the transaction command by command.

Security decisions:

* a client refused by DANCE (TLS handshake failure, or a pending lookup that fails) never causes
  a backend connection;
* with ``require_tls`` (default) MAIL before STARTTLS is answered ``530 5.7.0 Must issue a
  STARTTLS command first``; plaintext sessions are forwarded (without LOGIN, so Postfix applies
  its normal no-relay restrictions) only when ``require_tls`` is off and
  ``allow_unauthenticated`` is on;
* the client's own ``XCLIENT``, ``XFORWARD``, ``AUTH``, ``BDAT`` and a second ``STARTTLS`` are
  answered by the proxy and never forwarded; EHLO/HELO are always answered by the proxy, so the
  client never sees the backend's extensions;
* plaintext pipelined after STARTTLS is refused (CVE-2011-0411 style command injection);
* PIPELINING is not advertised: the relay runs in lock step (one command, one reply), so the
  proxy always knows whether it is in command or DATA mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from dance.auth import Authenticator
from dance.identity import Identity
from dance.tls.bridge import DEFAULT_CODEPOINT, TLSStats
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

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
MAX_COMMAND = 2048  # RFC 5321 says 512 octets; be lenient with extensions
MAX_LINE = 64 * 1024  # the StreamReader limit: text lines in DATA (RFC 5321: 1000)
_FORBIDDEN = {b"XCLIENT", b"XFORWARD", b"AUTH", b"BDAT"}


class SmtpProxyError(ValueError):
    """Invalid SMTP proxy configuration."""


class BackendError(Exception):
    """The backend MTA did not accept the session setup (greeting, EHLO or XCLIENT)."""


@dataclass(frozen=True)
class SmtpProxyConfig:
    backend: tuple[str, int]
    hostname: str = "dance-smtp-proxy"
    max_size: int = DEFAULT_MAX_SIZE
    require_tls: bool = True
    allow_unauthenticated: bool = False
    connect_timeout: float = 5.0
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2: server timeout 5 minutes
    tls_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise SmtpProxyError("the SIZE limit must be positive")
        host = self.hostname
        if not host or not host.isascii() or any(c.isspace() for c in host):
            raise SmtpProxyError(f"bad hostname {self.hostname!r}")
        if self.require_tls and self.allow_unauthenticated:
            raise SmtpProxyError("--allow-unauthenticated needs --no-require-tls")


@dataclass
class SmtpStats:
    sessions: int = 0
    tls_started: int = 0
    tls_refused: int = 0
    authenticated: int = 0
    backend_connections: int = 0
    backend_failures: int = 0
    refused_commands: dict[str, int] = field(default_factory=dict)

    def refuse(self, verb: str) -> None:
        self.refused_commands[verb] = self.refused_commands.get(verb, 0) + 1


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


def _strip_eol(line: bytes) -> bytes:
    """A line without its LF and one CR before it (how Postfix reads lines)."""
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    return line


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    """One (possibly multi-line) SMTP reply: (code, raw lines with CRLF)."""
    lines: list[bytes] = []
    while True:
        line = await reader.readline()
        if not line:
            raise BackendError("backend closed the connection")
        lines.append(line)
        if len(line) < 4 or not line[:3].isdigit():
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
    ) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.reader = reader
        self.writer = writer
        self.tls = False
        self.identity: Identity | None = None
        self.helo: str | None = None
        self.backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    async def reply(self, text: str) -> None:
        self.writer.write(text.encode("ascii", "replace") + b"\r\n")
        await self.writer.drain()

    def capabilities(self, greet: str) -> str:
        caps = [f"{self.config.hostname} greets {greet}", f"SIZE {self.config.max_size}"]
        caps += ["8BITMIME", "ENHANCEDSTATUSCODES"]
        if not self.tls:
            caps.append("STARTTLS")
        return "\r\n".join(
            f"250{' ' if i == len(caps) - 1 else '-'}{c}" for i, c in enumerate(caps)
        )

    async def read_command(self) -> bytes | None:
        try:
            line = await asyncio.wait_for(self.reader.readline(), self.config.command_timeout)
        except (ValueError, asyncio.LimitOverrunError):
            await self.reply("500 5.5.2 Line too long")
            return None
        except TimeoutError:
            await self.reply("421 4.4.2 Timeout, closing connection")
            return None
        if not line:
            return None
        if len(line) > MAX_COMMAND:
            await self.reply("500 5.5.2 Line too long")
            return None
        return line

    async def run(self) -> None:
        await self.reply(f"220 {self.config.hostname} ESMTP dance smtp-proxy")
        while True:
            line = await self.read_command()
            if line is None:
                return
            body = _strip_eol(line)
            if b"\r" in body or b"\0" in body:
                # one line for the proxy must be one line for the backend
                self.proxy.stats.refuse("bare-CR")
                await self.reply("500 5.5.2 Error: bare <CR> or NUL in command")
                continue
            parts = body.split(None, 1)
            verb = parts[0].upper() if parts else b""
            arg_text = parts[1].decode("ascii", "replace").strip() if len(parts) > 1 else ""
            if verb in (b"EHLO", b"HELO"):
                if not arg_text:
                    await self.reply(f"501 5.5.4 Syntax: {verb.decode()} hostname")
                    continue
                self.helo = arg_text
                if verb == b"EHLO":
                    await self.reply(self.capabilities(arg_text))
                else:
                    await self.reply(f"250 {self.config.hostname}")
                if self.backend is not None:  # a new EHLO resets the transaction
                    await self.backend_command(b"RSET\r\n", echo=False)
            elif verb == b"STARTTLS":
                if self.tls:
                    self.proxy.stats.refuse("STARTTLS")
                    await self.reply("503 5.5.1 Error: TLS already active")
                    continue
                if not await self.start_tls():
                    return
            elif verb == b"QUIT":
                if self.backend is not None:
                    with contextlib.suppress(BackendError, OSError):
                        await self.backend_command(b"QUIT\r\n", echo=False)
                await self.reply("221 2.0.0 Bye")
                return
            elif verb == b"NOOP":
                await self.reply("250 2.0.0 Ok")
            elif verb in _FORBIDDEN:
                self.proxy.stats.refuse(verb.decode("ascii", "replace"))
                log.info("refused %s from %s", verb.decode("ascii", "replace"), self.peer)
                await self.reply("502 5.5.1 Error: command not implemented")
            elif self.backend is not None:
                if not await self.relay(verb, body + b"\r\n"):
                    return
            elif verb == b"RSET":
                await self.reply("250 2.0.0 Ok")
            elif verb == b"MAIL":
                if self.helo is None:
                    await self.reply("503 5.5.1 Error: send HELO/EHLO first")
                    continue
                if not self.tls and self.config.require_tls:
                    await self.reply("530 5.7.0 Must issue a STARTTLS command first")
                    continue
                if self.identity is None and not self.config.allow_unauthenticated:
                    await self.reply("530 5.7.0 Authentication required")
                    continue
                try:
                    await self.open_backend()
                except (BackendError, OSError, TimeoutError) as exc:
                    self.proxy.stats.backend_failures += 1
                    log.warning("backend %s:%d: %s", *self.config.backend, exc)
                    await self.reply("451 4.3.0 Error: backend unavailable")
                    return
                if not await self.relay(verb, body + b"\r\n"):
                    return
            elif verb in (b"RCPT", b"DATA"):
                await self.reply("503 5.5.1 Error: need MAIL command")
            else:
                await self.reply("502 5.5.2 Error: command not recognized")

    async def start_tls(self) -> bool:
        """Answer STARTTLS, upgrade, authenticate; False when the session must end."""
        buffered = getattr(self.reader, "_buffer", b"")
        if buffered:
            self.proxy.stats.refuse("STARTTLS-pipelined")
            await self.reply("501 5.5.4 Error: data after STARTTLS")
            return False
        await self.reply("220 2.0.0 Ready to start TLS")
        core = self.proxy.core
        try:
            await self.writer.start_tls(core.context, ssl_handshake_timeout=self.config.tls_timeout)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            self.proxy.stats.tls_refused += 1
            log.info("TLS with %s failed: %r", self.peer, exc)
            return False
        self.proxy.stats.tls_started += 1
        identity = await core.identity_of(self.writer)
        if identity is None:
            self.proxy.stats.tls_refused += 1
            log.info("client %s refused after TLS", self.peer)
            return False
        self.proxy.stats.authenticated += 1
        self.identity = identity
        self.tls = True
        self.helo = None  # RFC 3207 4.2: forget everything, the client sends EHLO again
        log.info("client %s authenticated as %s", self.peer, identity.identity)
        return True

    async def open_backend(self) -> None:
        cfg = self.config
        b_reader, b_writer = await asyncio.wait_for(
            asyncio.open_connection(*cfg.backend, limit=MAX_LINE), cfg.connect_timeout
        )
        self.backend = (b_reader, b_writer)
        self.proxy.stats.backend_connections += 1
        code, _ = await _read_reply(b_reader)
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

    async def _exchange(self, command: bytes) -> tuple[int, list[bytes]]:
        assert self.backend is not None
        b_reader, b_writer = self.backend
        b_writer.write(command)
        await b_writer.drain()
        return await asyncio.wait_for(_read_reply(b_reader), self.config.command_timeout)

    async def backend_command(self, command: bytes, *, echo: bool = True) -> int:
        code, lines = await self._exchange(command)
        if echo:
            self.writer.write(b"".join(lines))
            await self.writer.drain()
        return code

    async def relay(self, verb: bytes, line: bytes) -> bool:
        """Forward one command (and the message after a 354); False when the session ends."""
        try:
            code = await self.backend_command(line)
            if verb == b"DATA" and code == 354:
                await self.copy_message()
                await self.backend_command(b"", echo=True)
        except (BackendError, OSError, TimeoutError) as exc:
            log.warning("backend session ended: %s", exc)
            with contextlib.suppress(OSError):
                await self.reply("421 4.3.0 Error: backend connection lost")
            return False
        return True

    async def copy_message(self) -> None:
        assert self.backend is not None
        b_writer = self.backend[1]
        while True:
            try:
                data = await asyncio.wait_for(self.reader.readline(), self.config.command_timeout)
            except ValueError:
                raise BackendError("message line too long") from None
            if not data.endswith(b"\n"):
                raise BackendError("client closed during DATA")
            # every line leaves with CRLF, so the end of data is the same line for both sides
            text = _strip_eol(data)
            b_writer.write(text + b"\r\n")
            if text == b".":
                await b_writer.drain()
                return
            if b_writer.transport.get_write_buffer_size() > MAX_LINE:
                await b_writer.drain()

    async def close(self) -> None:
        if self.backend is not None:
            self.backend[1].close()
            with contextlib.suppress(OSError):
                await self.backend[1].wait_closed()
        self.writer.close()


class SmtpProxy:
    """The listening SMTP proxy: ``core`` is the DANCE TLS decision (stats, pending lookups)."""

    def __init__(self, config: SmtpProxyConfig, core: DanceServer) -> None:
        self.config = config
        self.core = core
        self.stats = SmtpStats()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.sessions += 1
        session = _Session(self, reader, writer)
        try:
            await session.run()
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as exc:
            log.debug("session ended: %r", exc)
        except Exception:
            log.exception("SMTP session failed")
        finally:
            await session.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        assert self.server is not None
        return str(self.server.sockets[0].getsockname()[0])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()

    async def serve_forever(self) -> None:
        assert self.server is not None
        await self.server.serve_forever()

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
) -> SmtpProxy:
    """Start the SMTP proxy. Raises BridgeError (no usable OpenSSL), ValueError (bad codepoint),
    OSError/ssl.SSLError (cannot listen, unreadable certificate or key)."""
    core = DanceServer(
        authenticator,
        cert=cert,
        key=key,
        codepoint=codepoint,
        san_fallback=san_fallback,
        max_pending=max_pending,
        stats=stats,
    )
    proxy = SmtpProxy(config, core)
    proxy.server = await asyncio.start_server(proxy.handle, host, port, limit=MAX_LINE)
    return proxy
