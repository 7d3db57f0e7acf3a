"""`dance proxy` as a process: SIGTERM drains then exits 0; SIGHUP reloads the certificate, key,
allow-list and trust anchors without dropping established connections, and a bad new
configuration is refused, logged, and the old one kept."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from dance import certs
from dance.testkit import Hierarchy
from dance.testkit.servers import free_port_pair
from dance.tls import client_context, probe
from tests.pki import key
from tests.processes import counter_sums, metrics_page
from tests.tls.common import DEVICE, NOW, OTHER, World, make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("tls-proxy-process"))


async def echo_backend() -> asyncio.Server:
    """Reads the PROXY v2 header, then echoes (waits for the client to speak first)."""

    async def on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(16)
            await reader.readexactly(struct.unpack("!H", head[14:])[0])
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on, "127.0.0.1", 0)


class Proxy:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.lines: list[str] = []

    async def line(self, containing: str, timeout: float = 20) -> str:
        assert self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            text = raw.decode()
            self.lines.append(text)
            assert raw, f"proxy ended: {self.lines}"
            if containing in text:
                return text

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode(errors="replace")


STARTED: list[asyncio.subprocess.Process] = []


def kill_leftovers() -> None:
    """Stop the proxies a failed test left running."""
    while STARTED:
        proc = STARTED.pop()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


async def start_proxy(world: World, backend_port: int, *extra: str) -> Proxy:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dance.cli", "proxy",
        "--listen", "127.0.0.1:0", "--backend", f"127.0.0.1:{backend_port}",
        "--server", f"{world.dns[0]}:{world.dns[1]}", "-v", *extra,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    STARTED.append(proc)
    proxy = Proxy(proc, 0)
    line = await proxy.line("listening on")
    proxy.port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])
    return proxy


def ctx(world: World, files: Any, name: str) -> Any:
    return client_context(name=name, cert=files.cert, key=files.key, cafile=world.ca)


async def relay(world: World, port: int, files: Any, name: str) -> Any:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx(world, files, name), server_hostname="localhost"
    )
    writer.write(b"one\n")
    assert await asyncio.wait_for(reader.readexactly(4), 20) == b"one\n"
    return reader, writer


async def accepted(world: World, port: int, files: Any, name: str) -> bool:
    r = await probe(
        "127.0.0.1",
        port,
        context=ctx(world, files, name),
        server_hostname="localhost",
        send=b"ping\n",
        read_timeout=10,
    )
    return r.accepted and r.reply == b"ping\n"


def clean(stderr: str) -> None:
    for bad in ("Traceback", "Task was destroyed", "never retrieved"):
        assert bad not in stderr, stderr


def test_sigterm_drains_established_connections_then_exits_0(world: World) -> None:
    async def scenario() -> None:
        backend = await echo_backend()
        port = backend.sockets[0].getsockname()[1]
        common = ["--cert", world.server.cert, "--key", world.server.key,
                  "--allow", "._device.example.test",
                  "--trust-anchor", world.anchor_file]  # fmt: skip
        try:
            proxy = await start_proxy(world, port, *common, "--drain-timeout", "30")
            reader, writer = await relay(world, proxy.port, world.device, DEVICE)
            proxy.proc.send_signal(signal.SIGTERM)
            for _ in range(200):  # stops accepting
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", proxy.port)
                    w.close()
                    await asyncio.sleep(0.05)
                except (ConnectionRefusedError, ConnectionResetError):  # reset: closed with
                    break  # our connection in its backlog
            else:
                pytest.fail("still accepting after SIGTERM")
            writer.write(b"two\n")  # the established connection is still relayed
            assert await asyncio.wait_for(reader.readexactly(4), 20) == b"two\n"
            assert proxy.proc.returncode is None
            writer.close()  # it ends by itself: the proxy exits long before the deadline
            assert await asyncio.wait_for(proxy.proc.wait(), 20) == 0
            assert "stopped (0 connection(s) cut" in await proxy.line("stopped")
            clean(await proxy.stderr())

            proxy = await start_proxy(world, port, *common, "--drain-timeout", "0.5")
            reader, writer = await relay(world, proxy.port, world.device, DEVICE)
            proxy.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proxy.proc.wait(), 20) == 0  # cut at the deadline
            assert "stopped (1 connection(s) cut" in await proxy.line("stopped")
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 20)
            writer.close()
            clean(await proxy.stderr())
        finally:
            kill_leftovers()
            backend.close()

    asyncio.run(scenario())


def test_sighup_reloads_without_dropping_connections(world: World, tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    cert, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    anchor = tmp_path / "anchor.txt"
    shutil.copy(world.server.cert, cert)
    shutil.copy(world.server.key, key_file)
    shutil.copy(world.anchor_file, anchor)
    allow.write_text(f"# reloaded on SIGHUP\n{OTHER}\n")
    ca_key = key(0)
    ca = certs.new_ca(ca_key, "TLS test server CA", now=NOW)
    new_key = key(8)
    new_cert = certs.issue_certificate(
        ca, ca_key, new_key.public_key(), dns_names=["localhost"], now=NOW, client_auth=False
    )
    stranger = Hierarchy("test.", ttl=60)  # other keys: its anchor makes every answer bogus
    stranger.sign(algorithm=13, denial="nsec3")

    async def reload(proxy: Proxy, expect: str) -> str:
        proxy.proc.send_signal(signal.SIGHUP)
        try:
            return await proxy.line(expect)
        except TimeoutError:
            raise AssertionError(f"{expect!r} not seen: {proxy.lines}") from None

    async def peer_cert(port: int) -> bytes:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx(world, world.device, DEVICE), server_hostname="localhost"
        )
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der

    async def scenario() -> None:
        backend = await echo_backend()
        try:
            proxy = await start_proxy(
                world, backend.sockets[0].getsockname()[1],
                "--cert", str(cert), "--key", str(key_file), "--allow-file", str(allow),
                "--trust-anchor", str(anchor),
            )  # fmt: skip
            assert not await accepted(world, proxy.port, world.device, DEVICE)
            reader, writer = await relay(world, proxy.port, world.other, OTHER)
            # the allow-list
            allow.write_text(f"{DEVICE}\n")
            await reload(proxy, "configuration reloaded")
            assert await accepted(world, proxy.port, world.device, DEVICE)
            assert not await accepted(world, proxy.port, world.other, OTHER)
            # bad new configurations: refused, logged, the old one kept
            allow.write_text("bad..name\n")  # not a name
            assert "reload refused" in await reload(proxy, "reload refused")
            allow.write_text(f"{DEVICE}\n")
            cert.write_text("not a certificate\n")
            assert "reload refused" in await reload(proxy, "reload refused")
            shutil.copy(world.server.cert, cert)
            anchor.write_text("garbage\n")
            assert "reload refused" in await reload(proxy, "reload refused")
            assert await accepted(world, proxy.port, world.device, DEVICE)
            # the certificate and key
            old_der = await peer_cert(proxy.port)
            cert.write_bytes(certs.certificate_pem(new_cert))
            certs.write_private_key(key_file, new_key)
            anchor.write_text(Path(world.anchor_file).read_text())
            await reload(proxy, "configuration reloaded")
            new_der = await peer_cert(proxy.port)
            assert new_der == new_cert.public_bytes(serialization.Encoding.DER) != old_der
            # the trust anchors: a stranger's anchor makes the (fresh) lookups bogus
            anchor.write_text(stranger.export_trust_anchor())
            await reload(proxy, "configuration reloaded")
            assert not await accepted(world, proxy.port, world.device, DEVICE)
            anchor.write_text(Path(world.anchor_file).read_text())
            await reload(proxy, "configuration reloaded")
            assert await accepted(world, proxy.port, world.device, DEVICE)
            # the connection made before all this is still relayed
            writer.write(b"two\n")
            assert await asyncio.wait_for(reader.readexactly(4), 20) == b"two\n"
            writer.close()
            proxy.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proxy.proc.wait(), 20) == 0
            stderr = await proxy.stderr()
            clean(stderr)
            assert stderr.count("reload refused") == 3  # logged as well
        finally:
            kill_leftovers()
            backend.close()

    asyncio.run(scenario())


def test_workers_access_log_and_metrics(world: World) -> None:
    """--workers 2: one port, two processes; every decision is one JSON access line with the
    client's address; each worker serves its metrics (PORT and PORT+1)."""
    import json

    async def scenario() -> None:
        backend = await echo_backend()
        port = backend.sockets[0].getsockname()[1]
        metrics = free_port_pair()
        try:
            proxy = await start_proxy(
                world, port, "--cert", world.server.cert, "--key", world.server.key,
                "--allow", "._device.example.test", "--trust-anchor", world.anchor_file,
                "--workers", "2", "--log-format", "json", "--metrics", f"127.0.0.1:{metrics}",
            )  # fmt: skip
            results = []
            for _ in range(6):
                results.append(await accepted(world, proxy.port, world.device, DEVICE))
                results.append(await accepted(world, proxy.port, world.impostor, DEVICE))
            assert results == [True, False] * 6

            pages = [await asyncio.to_thread(metrics_page, metrics + i) for i in range(2)]
            counts = counter_sums(pages, "dance_decisions_total{")
            assert counts == {
                'dance_decisions_total{outcome="accepted",reason="-"}': 6.0,
                'dance_decisions_total{outcome="rejected",reason="no-match"}': 6.0,
            }, pages
            proxy.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proxy.proc.wait(), 30) == 0
            err = await proxy.stderr()
            clean(err)
            lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
            assert sorted(d["outcome"] for d in lines) == ["accepted"] * 6 + ["rejected"] * 6
            for doc in lines:
                assert doc["service"] == "proxy" and doc["client_name"] == DEVICE
                assert doc["client"].startswith("127.0.0.1:") and doc["latency_ms"] >= 0
        finally:
            kill_leftovers()
            backend.close()

    asyncio.run(scenario())
