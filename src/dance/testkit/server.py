"""Embedded authoritative DNS server for tests: asyncio, UDP and TCP on one loopback port.

``async with TestServer(zoneset) as srv: srv.port`` inside an event loop, or
``with ServerThread(zoneset) as srv: srv.address`` from synchronous code (the server then runs
its own event loop in a daemon thread). Port 0 picks a free port; UDP and TCP share it.

Bounds: queries above ``max_message_size`` are dropped, at most ``max_tcp_connections``
connections are served at once (extra ones are closed at once), a TCP connection idle for
``tcp_idle_timeout`` seconds is closed, at most ``max_pending`` delayed (``slow`` fault) UDP
answers wait at once, and a connection may carry several queries (2-byte length framing,
RFC 1035 4.2.2 / RFC 7766), answered in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import cast

from dance.zone.zoneset import ZoneSet

__all__ = ["ServerThread", "TestServer"]

log = logging.getLogger(__name__)

_BIND_ATTEMPTS = 20


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: TestServer) -> None:
        self._server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._server._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class TestServer:
    """An authoritative server for the zones of ``zoneset`` (faults included)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        zoneset: ZoneSet,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_message_size: int = 65535,
        max_tcp_connections: int = 64,
        tcp_idle_timeout: float = 10.0,
        max_pending: int = 1024,
        udp: bool = True,
        tcp: bool = True,
    ) -> None:
        self.zoneset = zoneset
        self.host = host
        self._requested_port = port
        self.port = 0
        self.max_message_size = max_message_size
        self.max_tcp_connections = max_tcp_connections
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_pending = max_pending
        self._want_udp = udp
        self._want_tcp = tcp
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.queries = 0

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        last_error: OSError | None = None
        for _ in range(_BIND_ATTEMPTS):
            port = self._requested_port
            udp: asyncio.DatagramTransport | None = None
            try:
                if self._want_udp:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpProtocol(self), local_addr=(self.host, port), family=family
                    )
                    udp = transport
                    port = transport.get_extra_info("sockname")[1]
                if self._want_tcp:
                    tcp = await asyncio.start_server(
                        self._on_connection,
                        self.host,
                        port,
                        family=family,
                        reuse_address=True,
                        limit=self.max_message_size + 2,
                    )
                    port = tcp.sockets[0].getsockname()[1]
                    self._tcp = tcp
            except OSError as exc:
                last_error = exc
                if udp is not None:
                    udp.close()
                if self._requested_port:
                    raise
                continue
            self._udp = udp
            self.port = port
            log.debug("test DNS server on %s port %d", self.host, port)
            return
        raise OSError(f"could not bind UDP and TCP on one port: {last_error}")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 2.0)
            self._tcp = None

    async def __aenter__(self) -> TestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ UDP

    def _on_datagram(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if len(data) > self.max_message_size:
            return
        self.queries += 1
        try:
            reply = self.zoneset.respond_wire(data, transport="udp")
        except Exception:
            log.exception("responder failed")
            return
        if reply.data is None:
            return
        payload = reply.data
        if reply.delay > 0:
            if len(self._tasks) >= self.max_pending:
                log.debug("too many delayed answers pending: dropping one")
                return
            self._spawn(self._send_later(payload, addr, reply.delay))
        elif self._udp is not None:
            self._udp.sendto(payload, addr)

    async def _send_later(self, data: bytes, addr: tuple[str | object, int], delay: float) -> None:
        await asyncio.sleep(delay)
        if self._udp is not None:
            self._udp.sendto(data, addr)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ TCP

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(self._writers) >= self.max_tcp_connections:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(self.tcp_idle_timeout):
                    header = await reader.readexactly(2)
                    length = int.from_bytes(header, "big")
                    if length == 0 or length > self.max_message_size:
                        return
                    data = await reader.readexactly(length)
                self.queries += 1
                reply = self.zoneset.respond_wire(data, transport="tcp")
                if reply.data is None:
                    continue
                if reply.delay > 0:
                    await asyncio.sleep(reply.delay)
                writer.write(len(reply.data).to_bytes(2, "big") + reply.data)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("TCP connection failed")
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class ServerThread:
    """A :class:`TestServer` running in its own thread, for synchronous tests."""

    def __init__(
        self,
        zoneset: ZoneSet,
        host: str = "127.0.0.1",
        port: int = 0,
        **kwargs: object,
    ) -> None:
        self.server = TestServer(zoneset, host, port, **kwargs)  # type: ignore[arg-type]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread = threading.Thread(target=self._run, name="dance-testkit-dns", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("test DNS server did not start")
        if self._error is not None:
            raise RuntimeError("test DNS server failed to start") from self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop_event, thread = self._loop, self._stop, self._thread
        if loop is not None and stop_event is not None and thread is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
            thread.join(timeout)
            if thread.is_alive():
                log.warning("test DNS server thread did not stop within %.1f s", timeout)
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
