"""Abuse load for the embedded authority, run in its own process so that the measuring client
(and the server) do not share its interpreter lock:

* ``--non-readers N``: N TCP clients, from 127.0.0.10 upwards (5 per address), that send a
  few queries (``--burst``, 5) and never read the replies (receive buffer 4 KB); a client whose
  connection is closed (or refused) connects again after 0.1 s;
* ``--axfrs M``: M clients looping TSIG-signed AXFRs (from 127.0.0.3), each reading the whole
  transfer as fast as it comes.

    python -m tests.authority.abuse --port P --key-line hmac-sha256:NAME:SECRET \\
        --non-readers 100 --axfrs 8 --seconds 6

prints one JSON line at the end: connections made, transfers completed.
:func:`measure` is the legitimate client: UDP and TCP queries, with their latencies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass, field

import dns.message
import dns.query
import dns.rcode
import dns.tsig

from dance.tsig import parse_tsig_keys

QUERY = "www.example.test"


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


_ESTABLISHED, _SYN_SENT = 1, 2


def _tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (Linux TCP_INFO): 1 established, 2 connecting,
    8 the server has closed its side, 7 reset."""
    try:
        return struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]
    except OSError:
        return 7


def non_readers(port: int, count: int, stop_at: float, burst: int = 5) -> dict[str, int]:
    """Run ``count`` clients that never read until ``stop_at`` (monotonic): each connects,
    sends ``burst`` queries, keeps the connection without reading, and connects again 0.1 s
    after the server has closed it."""
    stats = {"connections": 0, "closed_by_server": 0}
    payload = b"".join(
        _frame(dns.message.make_query(QUERY, "A", want_dnssec=True).to_wire()) for _ in range(burst)
    )
    socks: list[tuple[socket.socket, float, bool] | None] = [None] * count
    retry_at = [0.0] * count

    def drop(i: int) -> None:
        entry = socks[i]
        if entry is not None:
            entry[0].close()
        socks[i] = None
        retry_at[i] = time.monotonic() + 0.1

    try:
        while time.monotonic() < stop_at:
            now = time.monotonic()
            for i in range(count):
                entry = socks[i]
                if entry is None:
                    if now >= retry_at[i]:
                        sock = socket.socket()
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                        sock.bind((f"127.0.0.{10 + i // 5}", 0))
                        sock.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            sock.connect(("127.0.0.1", port))
                        socks[i] = (sock, now, False)
                    continue
                sock, since, sent = entry
                state = _tcp_state(sock)
                if state == _ESTABLISHED and not sent:
                    try:
                        sock.send(payload)  # never read what comes back
                    except OSError:
                        drop(i)
                        continue
                    stats["connections"] += 1
                    socks[i] = (sock, since, True)
                elif state == _SYN_SENT:
                    if now - since > 2:
                        drop(i)
                elif state != _ESTABLISHED:
                    stats["closed_by_server"] += sent
                    drop(i)
            time.sleep(0.05)
    finally:
        for i in range(count):
            drop(i)
    return stats


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


def axfr_once(port: int, key: dns.tsig.Key, keyname: dns.name.Name, messages: int | None) -> int:
    """One TSIG-signed AXFR read to the end; returns the number of messages. With
    ``messages`` known (from an earlier full transfer) the messages are read without parsing."""
    query = dns.message.make_query("example.test.", "AXFR")
    query.use_tsig({keyname: key}, keyname=keyname)
    with socket.socket() as sock:
        sock.bind(("127.0.0.3", 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(_frame(query.to_wire()))
        count = 0
        while True:
            length = int.from_bytes(_recv_exact(sock, 2), "big")
            wire = _recv_exact(sock, length)
            count += 1
            if messages is not None:
                if count == messages:
                    return count
                continue
            message = dns.message.from_wire(wire, keyring=False)
            if message.rcode() != dns.rcode.NOERROR:
                raise ConnectionError(f"AXFR answered {dns.rcode.to_text(message.rcode())}")
            soas = sum(1 for r in message.answer if r.rdtype == dns.rdatatype.SOA)
            if (count == 1 and soas == 2) or (count > 1 and soas):
                return count


def axfr_loops(port: int, key_line: str, count: int, stop_at: float) -> dict[str, int]:
    tsig = parse_tsig_keys(key_line)[0]
    key, keyname = tsig.to_dnspython(), tsig.dns_name
    messages = None
    while messages is None and time.monotonic() < stop_at:  # a reference transfer
        try:
            messages = axfr_once(port, key, keyname, None)
        except (OSError, ConnectionError):
            time.sleep(0.1)
    done = [0]
    failed = [0]

    def loop() -> None:
        while time.monotonic() < stop_at:
            try:
                axfr_once(port, key, keyname, messages)
                done[0] += 1
            except (OSError, ConnectionError):
                failed[0] += 1
                time.sleep(0.1)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"transfers": done[0], "transfer_failures": failed[0], "messages": messages}


def run(
    port: int, key_line: str, readers: int, axfrs: int, seconds: float, burst: int = 5
) -> dict[str, int]:
    stop_at = time.monotonic() + seconds
    result: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: result.update(axfr_loops(port, key_line, axfrs, stop_at)), daemon=True
    )
    if axfrs:
        thread.start()
    if readers:
        result.update(non_readers(port, readers, stop_at, burst))
    if axfrs:
        thread.join()
    return result


@dataclass
class Latencies:
    udp: list[float] = field(default_factory=list)
    tcp: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.udp) + len(self.tcp) + len(self.failures)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"queries": self.total, "failures": len(self.failures)}
        for name, values in (("udp", self.udp), ("tcp", self.tcp), ("all", self.udp + self.tcp)):
            if values:
                ordered = sorted(values)
                out[f"{name}_p50_ms"] = round(statistics.median(ordered) * 1000, 1)
                out[f"{name}_p99_ms"] = round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1)
                out[f"{name}_max_ms"] = round(ordered[-1] * 1000, 1)
        return out


def measure(port: int, seconds: float, interval: float = 0.02, timeout: float = 2.0) -> Latencies:
    """The legitimate client (127.0.0.1): a UDP query, then a TCP query on a new connection,
    again and again; each must be answered (NOERROR with data) within ``timeout``."""
    result = Latencies()
    stop_at = time.monotonic() + seconds
    query = dns.message.make_query(QUERY, "A", want_dnssec=True)
    while time.monotonic() < stop_at:
        for transport in ("udp", "tcp"):
            started = time.monotonic()
            try:
                if transport == "udp":
                    answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)
                else:
                    answer = dns.query.tcp(query, "127.0.0.1", port=port, timeout=timeout)
            except Exception as exc:
                result.failures.append(f"{transport}: {exc!r}")
                continue
            elapsed = time.monotonic() - started
            if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
                result.failures.append(f"{transport}: {dns.rcode.to_text(answer.rcode())}")
            else:
                getattr(result, transport).append(elapsed)
            time.sleep(interval)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-line", required=True, help="ALGORITHM:NAME:SECRET for AXFR")
    parser.add_argument("--non-readers", type=int, default=100)
    parser.add_argument("--axfrs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--burst", type=int, default=5, help="queries sent by each non-reader")
    args = parser.parse_args()
    result = run(args.port, args.key_line, args.non_readers, args.axfrs, args.seconds, args.burst)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
