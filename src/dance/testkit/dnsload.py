"""Abusive DNS load on a loopback authoritative server, and a legitimate client that measures
how it is still answered.

The load (run it in its own process, so that neither the measuring client nor the server
shares its interpreter lock: :func:`start_load`, or ``python -m dance.testkit.dnsload``):

* ``--non-readers N``: N TCP clients, from 127.0.0.10 upwards (5 per address), that send a
  few queries (``--burst``, 5) and never read the replies (receive buffer 4 KB); a client whose
  connection is closed (or refused) connects again after 0.1 s;
* ``--axfrs M``: M clients looping TSIG-signed AXFRs of ``example.test.`` (from 127.0.0.3),
  each reading the whole transfer as fast as it comes.

::

    python -m dance.testkit.dnsload --port P --key-line hmac-sha256:NAME:SECRET \\
        --non-readers 100 --axfrs 8 --seconds 6

prints one JSON line at the end: connections made (``connections``), connections closed by
the server after the queries were sent (``closed_by_server``), transfers completed
(``transfers``), failed (``transfer_failures``), messages per transfer (``messages``).

:func:`measure` is the legitimate client (127.0.0.1): UDP and TCP queries, with their
latencies (:class:`Latencies`). Linux only (the non-readers read the kernel's TCP state).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig

from dance.testkit.authority import python_env
from dance.tsig import TSIGError, parse_tsig_keys

__all__ = [
    "QUERY",
    "Latencies",
    "LoadError",
    "LoadProcess",
    "TransferError",
    "axfr_loops",
    "axfr_once",
    "main",
    "measure",
    "non_readers",
    "run",
    "start_load",
]

logger = logging.getLogger(__name__)

#: The name the non-readers and the legitimate client ask for (type A).
QUERY = "www.example.test."
#: The zone the AXFR clients transfer.
ZONE = "example.test."
#: Non-readers per source address, and the most of them (127.0.0.10 .. 127.0.0.254).
PER_ADDRESS = 5
MAX_NON_READERS = PER_ADDRESS * (255 - 10)


class LoadError(RuntimeError):
    """The load could not run (bad parameters, unsupported platform, the load process failed)."""


class TransferError(ConnectionError):
    """A zone transfer was cut short or refused."""


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


_ESTABLISHED, _SYN_SENT = 1, 2


def _tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (Linux TCP_INFO): 1 established, 2 connecting,
    8 the server has closed its side, 7 reset."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except OSError:
        return 7
    return int(struct.unpack("B", info)[0])


def non_readers(port: int, count: int, stop_at: float, burst: int = 5) -> dict[str, int]:
    """Run ``count`` clients that never read until ``stop_at`` (monotonic): each connects,
    sends ``burst`` queries, keeps the connection without reading, and connects again 0.1 s
    after the server has closed it. Returns ``connections`` (queries sent) and
    ``closed_by_server``. Raises `LoadError` for a bad ``count`` or ``burst`` or where TCP_INFO
    is missing (not Linux)."""
    _check_non_readers(count, burst)
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
                        socks[i] = (_connect(port, i), now, False)
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


def _check_non_readers(count: int, burst: int) -> None:
    if not 0 <= count <= MAX_NON_READERS:
        raise LoadError(f"non-readers must be 0..{MAX_NON_READERS}, not {count}")
    if burst < 1:
        raise LoadError(f"burst must be >= 1, not {burst}")
    if not hasattr(socket, "TCP_INFO"):
        raise LoadError("the non-readers need Linux (TCP_INFO)")


def _connect(port: int, i: int) -> socket.socket:
    """A non-blocking connection (in progress) from 127.0.0.(10 + i // 5) with a 4 KB receive
    buffer."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((f"127.0.0.{10 + i // PER_ADDRESS}", 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise TransferError("the server closed the transfer")
        data += chunk
    return bytes(data)


def axfr_once(
    port: int,
    key: dns.tsig.Key,
    keyname: dns.name.Name,
    messages: int | None,
    *,
    zone: str = ZONE,
) -> int:
    """One TSIG-signed AXFR of ``zone`` read to the end; returns the number of messages. With
    ``messages`` known (from an earlier full transfer) the messages are read without parsing.
    Raises `TransferError` (or another `OSError`) if it is cut short or not NOERROR, and
    :class:`dns.exception.DNSException` for a message dnspython refuses.

    Without ``messages``, each message's header is parsed (its rcode); dnspython parses a whole
    message only if it is the first, or if it holds the 20 fixed bytes of the opening SOA
    (serial .. minimum), which the closing SOA repeats (RFC 5936): the end is found without
    parsing every record of a big zone (seconds of CPU on a loaded machine)."""
    query = dns.message.make_query(zone, "AXFR")
    query.use_tsig({keyname: key}, keyname=keyname)
    with socket.socket() as sock:
        sock.bind(("127.0.0.3", 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(_frame(query.to_wire()))
        count = 0
        soa_tail = b""
        while True:
            length = int.from_bytes(_recv_exact(sock, 2), "big")
            wire = _recv_exact(sock, length)
            count += 1
            if messages is not None:
                if count == messages:
                    return count
                continue
            header = dns.message.from_wire(wire, keyring=False, question_only=True)
            if header.rcode() != dns.rcode.NOERROR:
                raise TransferError(f"AXFR answered {dns.rcode.to_text(header.rcode())}")
            if count > 1 and soa_tail not in wire:
                continue  # no SOA in this message
            message = dns.message.from_wire(wire, keyring=False, one_rr_per_rrset=True)
            soas = [r for r in message.answer if r.rdtype == dns.rdatatype.SOA]
            if count == 1:
                if not soas or message.answer[0].rdtype != dns.rdatatype.SOA:
                    raise TransferError("the transfer does not start with the SOA")
                soa = soas[0][0]
                soa_tail = struct.pack(
                    "!IIIII", soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum
                )
            if (count == 1 and len(soas) == 2) or (count > 1 and soas):
                return count


def axfr_loops(port: int, key_line: str, count: int, stop_at: float) -> dict[str, int]:
    """``count`` threads looping AXFRs until ``stop_at`` (monotonic), after one reference
    transfer that counts the messages. Returns ``transfers``, ``transfer_failures`` and
    ``messages`` (0 if no reference transfer succeeded: then no loop runs). Raises `LoadError`
    if ``key_line`` is not a TSIG key (``ALGORITHM:NAME:SECRET``)."""
    key, keyname = _tsig(key_line)
    messages: int | None = None
    while messages is None and time.monotonic() < stop_at:  # a reference transfer
        try:
            messages = axfr_once(port, key, keyname, None)
        except (OSError, dns.exception.DNSException) as exc:
            logger.debug("reference transfer failed: %r", exc)
            time.sleep(0.1)
    done = [0]
    failed = [0]

    def loop() -> None:
        while time.monotonic() < stop_at:
            try:
                axfr_once(port, key, keyname, messages)
                done[0] += 1
            except OSError:
                failed[0] += 1
                time.sleep(0.1)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    if messages is not None:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return {"transfers": done[0], "transfer_failures": failed[0], "messages": messages or 0}


def _tsig(key_line: str) -> tuple[dns.tsig.Key, dns.name.Name]:
    try:
        key = parse_tsig_keys(key_line)[0]
    except TSIGError as exc:
        raise LoadError(f"bad TSIG key line: {exc}") from None
    return key.to_dnspython(), key.dns_name


def run(
    port: int, key_line: str, readers: int, axfrs: int, seconds: float, burst: int = 5
) -> dict[str, int]:
    """``readers`` non-readers and ``axfrs`` looping transfers together for ``seconds``;
    returns the merged counters of :func:`non_readers` and :func:`axfr_loops`."""
    if seconds < 0 or axfrs < 0:
        raise LoadError("seconds and axfrs must be >= 0")
    if readers:
        _check_non_readers(readers, burst)
    if axfrs:
        _tsig(key_line)  # a bad key fails now, not after the non-readers' run
    stop_at = time.monotonic() + seconds
    result: dict[str, int] = {}
    errors: list[BaseException] = []

    def transfers() -> None:
        try:
            result.update(axfr_loops(port, key_line, axfrs, stop_at))
        except Exception as exc:  # reported to the caller below
            errors.append(exc)

    thread = threading.Thread(target=transfers, daemon=True)
    if axfrs:
        thread.start()
    try:
        if readers:
            result.update(non_readers(port, readers, stop_at, burst))
    finally:
        if axfrs:
            thread.join()
    if errors:
        raise errors[0]
    return result


@dataclass
class Latencies:
    """Latencies (seconds) of the answered queries, and the failures (one line each)."""

    udp: list[float] = field(default_factory=list)
    tcp: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Queries sent."""
        return len(self.udp) + len(self.tcp) + len(self.failures)

    def summary(self) -> dict[str, float]:
        """``queries``, ``failures``, and p50/p99/max in ms per transport (``udp``, ``tcp``,
        ``all``) when it has answers."""
        out: dict[str, float] = {"queries": self.total, "failures": len(self.failures)}
        for name, values in (("udp", self.udp), ("tcp", self.tcp), ("all", self.udp + self.tcp)):
            if values:
                ordered = sorted(values)
                out[f"{name}_p50_ms"] = round(statistics.median(ordered) * 1000, 1)
                p99 = ordered[math.ceil(len(ordered) * 0.99) - 1]  # nearest rank
                out[f"{name}_p99_ms"] = round(p99 * 1000, 1)
                out[f"{name}_max_ms"] = round(ordered[-1] * 1000, 1)
        return out


def measure(port: int, seconds: float, interval: float = 0.02, timeout: float = 2.0) -> Latencies:
    """The legitimate client (127.0.0.1): a UDP query, then a TCP query on a new connection,
    again and again for ``seconds``; each must be answered (NOERROR with data) within
    ``timeout``, or it is counted as a failure."""
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
            except Exception as exc:  # a measurement: every way of not being answered counts
                result.failures.append(f"{transport}: {exc!r}")
                continue
            elapsed = time.monotonic() - started
            if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
                result.failures.append(f"{transport}: {dns.rcode.to_text(answer.rcode())}")
            else:
                (result.udp if transport == "udp" else result.tcp).append(elapsed)
            time.sleep(interval)
    return result


@dataclass
class LoadProcess:
    """A load run in its own process (:func:`start_load`)."""

    process: subprocess.Popen[str]

    def result(self, timeout: float) -> dict[str, int]:
        """Wait for the end of the load and return its counters. Raises `LoadError` if it
        does not end within ``timeout`` (it is killed), fails, or prints no JSON line."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise LoadError(f"the load did not end within {timeout:g} s") from None
        lines = out.strip().splitlines()
        if self.process.returncode != 0 or not lines:
            raise LoadError(f"the load failed (status {self.process.returncode}):\n{err[-3000:]}")
        try:
            counters = json.loads(lines[-1])
        except ValueError:
            raise LoadError(f"the load printed no JSON line: {lines[-1]!r}") from None
        if not isinstance(counters, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in counters.items()
        ):
            raise LoadError(f"unexpected load counters: {lines[-1]!r}")
        return counters

    def kill(self) -> None:
        """Stop the load now (if it still runs)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def start_load(
    port: int,
    key_line: str,
    *,
    non_readers: int = 100,
    axfrs: int = 8,
    seconds: float = 6.0,
    burst: int = 5,
    env: Mapping[str, str] | None = None,
) -> LoadProcess:
    """Start ``python -m dance.testkit.dnsload`` against ``127.0.0.1:port`` (the same Python,
    this ``dance`` package first on its path); ``key_line`` is the TSIG key for the AXFRs
    (``ALGORITHM:NAME:SECRET``). Get the counters with :meth:`LoadProcess.result`."""
    command: Sequence[str] = [
        sys.executable, "-m", "dance.testkit.dnsload", "--port", str(port),
        "--key-line", key_line.strip(), "--non-readers", str(non_readers),
        "--axfrs", str(axfrs), "--seconds", str(seconds), "--burst", str(burst),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=python_env(env),
    )
    return LoadProcess(process)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dance.testkit.dnsload``: run the load, print its counters as one JSON line."""
    parser = argparse.ArgumentParser(
        prog="python -m dance.testkit.dnsload",
        description="Abusive DNS load (non-reading TCP clients, looping TSIG AXFRs) on a "
        "loopback server.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-line", required=True, help="ALGORITHM:NAME:SECRET for AXFR")
    parser.add_argument("--non-readers", type=int, default=100)
    parser.add_argument("--axfrs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--burst", type=int, default=5, help="queries sent by each non-reader")
    args = parser.parse_args(argv)
    try:
        result = run(
            args.port, args.key_line, args.non_readers, args.axfrs, args.seconds, args.burst
        )
    except LoadError as exc:
        print(f"dnsload: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
