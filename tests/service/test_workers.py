"""--workers: forked children on one SO_REUSEPORT port, supervised by the parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    sys.path.insert(0, {src!r})
    from dance.service.workers import run_workers

    PORT = int(sys.argv[1])

    def child(index: int) -> int:
        async def main() -> None:
            async def handle(reader, writer):
                writer.write(f"{{os.getpid()}}\\n".encode())
                await writer.drain()
                writer.close()
            server = await asyncio.start_server(handle, "127.0.0.1", PORT, reuse_port=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: print("reload", os.getpid(), flush=True))
            flag = os.environ["CRASH_ONCE"]
            if index == 1 and not os.path.exists(flag):
                open(flag, "w").close()
                os._exit(3)
            async with server:
                await stop.wait()
        asyncio.run(main())
        return 0

    sys.exit(run_workers(2, child))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids(port: int, tries: int = 200) -> set[int]:
    seen: set[int] = set()
    for _ in range(tries):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                seen.add(int(c.makefile().readline()))
        except OSError:
            time.sleep(0.02)
    return seen


def test_two_workers_share_the_port_reload_restart_and_stop(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    src = str(Path(__file__).resolve().parents[2] / "src")
    script.write_text(SCRIPT.format(src=src))
    port = _free_port()
    env = dict(os.environ, CRASH_ONCE=str(tmp_path / "crashed"))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # worker 1 crashes once at start and is started again
        pids = _pids(port)
        assert len(pids) == 2, pids  # both workers answer on the one port
        assert proc.pid not in pids
        proc.send_signal(signal.SIGHUP)  # forwarded to every worker
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.count("reload") == 2, out
    assert (tmp_path / "crashed").exists() and "starting it again" in err
    for pid in pids:  # no orphans
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker {pid} still running")
