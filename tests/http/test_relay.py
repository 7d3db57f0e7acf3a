"""`relay_http` over real sockets (plain TCP on loopback, TLS is dance.tls's): read timeouts,
bodies streamed intact and re-encoded, the backend's answers relayed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11

from dance.http.relay import relay_http

ME = "sensor7._device.example.test"


@dataclass
class Stats:
    requests: int = 0
    stripped_headers: int = 0
    refused: dict[str, int] = field(default_factory=dict)


async def with_proxy(
    client: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bytes]],
    *,
    answer: bytes = b"",
    **limits: float,
) -> tuple[bytes, bytes, Stats]:
    """Run ``client`` against a relay in front of a backend that records what it gets (and
    answers ``answer`` to its first bytes); returns (what the client read, backend bytes)."""
    got = bytearray()
    stats = Stats()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = False
        while data := await reader.read(65536):
            got.extend(data)
            if answer and not answered:
                writer.write(answer)
                answered = True
            if b"Connection: close\r\n" in got:  # as HTTP servers do: answer, then close
                break
        writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection(*b_server.sockets[0].getsockname()[:2])
        try:
            await relay_http(
                reader, writer, b_reader, b_writer, header="X-DANCE-Client-ID", identity=ME,
                stats=stats, **limits,  # type: ignore[arg-type]
            )  # fmt: skip
        finally:
            b_writer.close()
            writer.close()

    b_server = await asyncio.start_server(backend, "127.0.0.1", 0)
    p_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with b_server, p_server:
        reader, writer = await asyncio.open_connection(*p_server.sockets[0].getsockname()[:2])
        try:
            seen = await asyncio.wait_for(client(reader, writer), 20)
        finally:
            writer.close()
        await asyncio.sleep(0.05)
    return seen, bytes(got), stats


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await reader.read()  # until the proxy closes


def test_head_timeout_counts_from_the_first_byte() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        answer = asyncio.ensure_future(read_all(reader))
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":  # a byte every 0.1 s: no extension
            if answer.done():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)
        return await answer

    seen, got, stats = asyncio.run(with_proxy(client, head_timeout=0.6, idle_timeout=30))
    assert seen.startswith(b"HTTP/1.1 400 ") and b"head-timeout" in seen
    assert stats.refused == {"head-timeout": 1} and got == b""


def test_idle_client_is_closed_after_its_answer() -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX_DANCE_Client_ID: evil\r\n\r\n")
        return await read_all(reader)  # then silent: the proxy closes after idle_timeout

    start = time.monotonic()
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    seen, got, stats = asyncio.run(with_proxy(client, answer=ok, idle_timeout=0.5))
    assert seen == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert got == b"GET / HTTP/1.1\r\nX-DANCE-Client-ID: %s\r\nHost: x\r\n\r\n" % ME.encode()
    assert stats.requests == 1 and stats.stripped_headers == 1 and not stats.refused
    assert time.monotonic() - start < 15


def backend_requests(data: bytes) -> list[tuple[h11.Request, bytes]]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    out: list[tuple[h11.Request, bytes]] = []
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            out.append((event, b""))
        elif isinstance(event, h11.Data):
            out[-1] = (out[-1][0], out[-1][1] + event.data)
        elif isinstance(event, h11.EndOfMessage):
            conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return out
            conn.start_next_cycle()
        else:
            return out


def test_bodies_streamed_whole_and_chunks_reencoded() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    chunks = [b"a" * 10, b"b" * 70000, b"c"]

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length:  %d \r\n\r\n" % len(big))
        for i in range(0, len(big), 100_000):  # in pieces, as a client sends it
            writer.write(big[i : i + 100_000])
            await writer.drain()
        writer.write(b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in chunks:
            writer.write(b"%X\r\n%s\r\n" % (len(piece), piece))  # upper-case hex: re-encoded
        writer.write(b"0\r\n\r\nGET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return await read_all(reader)

    _, got, stats = asyncio.run(with_proxy(client, idle_timeout=5))
    requests = backend_requests(got)
    assert [r.target for r, _ in requests] == [b"/big", b"/chunks", b"/last"]
    assert requests[0][1] == big and requests[1][1] == b"".join(chunks)
    assert b"Content-Length: %d\r\n" % len(big) in got  # OWS removed
    assert b"\r\n\r\na\r\n" in got and b"\r\nA\r\n" not in got  # sizes in lower-case hex
    assert all(
        [v for n, v in r.headers.raw_items() if n.lower() == b"x-dance-client-id"] == [ME.encode()]
        for r, _ in requests
    )
    assert stats.requests == 3 and not stats.refused


def test_backend_answers_relayed_from_its_transport_in_order_with_flow_control() -> None:
    """The backend -> client copy runs in the backend transport's callbacks: bytes the backend
    sent before the relay started come first, a large answer to a client that reads slowly
    arrives whole and in order (the backend is paused while the client's buffer is full), and
    the backend stream still closes normally afterwards (its protocol saw the end)."""
    greeting = b"HTTP/1.1 100 Continue\r\n\r\n"
    big = bytes(range(256)) * 16384  # 4 MiB
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    closed: list[bool] = []

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)  # before any request: read by the stream before the switch
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection(*b_server.sockets[0].getsockname()[:2])
        await asyncio.sleep(0.2)  # the greeting is in b_reader's buffer by now
        try:
            await relay_http(
                reader, writer, b_reader, b_writer, header="X-DANCE-Client-ID", identity=ME,
                stats=Stats(), idle_timeout=10,
            )  # fmt: skip
        finally:
            b_writer.close()
            await asyncio.wait_for(b_writer.wait_closed(), 10)
            closed.append(True)
            writer.close()

    async def main() -> bytes:
        nonlocal b_server
        b_server = await asyncio.start_server(backend, "127.0.0.1", 0)
        p_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        async with b_server, p_server:
            reader, writer = await asyncio.open_connection(
                *p_server.sockets[0].getsockname()[:2], limit=4096
            )
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            seen = bytearray()
            while data := await asyncio.wait_for(reader.read(65536), 20):
                seen += data
                if len(seen) < 1_000_000:
                    await asyncio.sleep(0.01)  # slow at first: the proxy's buffer fills
            writer.close()
            for _ in range(100):
                if closed:
                    break
                await asyncio.sleep(0.05)
            return bytes(seen)

    b_server: asyncio.Server
    seen = asyncio.run(main())
    assert seen == greeting + answer
    assert closed == [True]


def test_client_bytes_wait_for_a_slow_backend() -> None:
    """The client -> backend copy runs in the client transport's callbacks: when the backend
    reads slowly, the relay stops reading the client (bounded buffering) and goes on once the
    backend has taken the bytes; the body arrives whole and in order."""
    big = bytes(range(256)) * 4096  # 1 MiB
    got = bytearray()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await asyncio.sleep(0.5)  # not reading: the relay's write buffer to it fills up
        while len(got) < len(big) + 60 and (data := await reader.read(65536)):
            got.extend(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection(*b_server.sockets[0].getsockname()[:2])
        b_writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        try:
            await relay_http(
                reader, writer, b_reader, b_writer, header="X-DANCE-Client-ID", identity=ME,
                stats=Stats(), idle_timeout=20,
            )  # fmt: skip
        finally:
            b_writer.close()
            writer.close()

    async def main() -> bytes:
        nonlocal b_server
        b_server = await asyncio.start_server(backend, "127.0.0.1", 0)
        p_server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        async with b_server, p_server:
            reader, writer = await asyncio.open_connection(*p_server.sockets[0].getsockname()[:2])
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
            writer.write(big)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 30)
            writer.close()
            return answer

    b_server: asyncio.Server
    answer = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 200 OK")
    requests = backend_requests(bytes(got))
    assert len(requests) == 1 and requests[0][1] == big
