"""``--workers N``: N processes serving one port, shared nothing (``SO_REUSEPORT``).

Python runs one thread of bytecode at a time, and a TLS handshake is mostly CPU: one process uses
one core. With ``--workers N`` the command forks N children before any event loop or thread
exists; each binds the same address with ``SO_REUSEPORT`` (the kernel spreads new connections
over them) and keeps its own caches. The parent only supervises:

* SIGTERM / SIGINT: passed to every child (each drains, then exits); the parent exits 0 when all
  have exited.
* SIGHUP: passed to every child (each reloads).
* A child that dies on its own is started again, at most ``max_restarts`` times a minute; past
  that the parent stops the others and exits 1.

Each child's access log and metrics are its own: with ``--metrics HOST:PORT``, worker ``i``
serves its ``/metrics`` at ``PORT + i`` (scrape them all; docs/deploy.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

__all__ = ["run_workers"]

log = logging.getLogger("dance.service")


def _spawn(index: int, child: Callable[[int], int]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: default signal handling, then serve
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        code = 1
        try:
            code = child(index)
        except KeyboardInterrupt:
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def run_workers(
    count: int,
    child: Callable[[int], int],
    *,
    max_restarts: int = 5,
    on_stop: Callable[[], None] | None = None,
) -> int:
    """Run ``child(index)`` in ``count`` forked processes and supervise them (see the module)."""
    if count < 1:
        raise ValueError("at least one worker")
    children: dict[int, int] = {}  # pid -> index
    stopping = False
    pending: list[int] = []

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        pending.append(sig)

    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(handled, forward)
    for i in range(count):
        children[_spawn(i, child)] = i
    log.info("%d workers started: %s", count, ", ".join(map(str, children)))
    restarts: list[float] = []
    failed = False
    while children:
        while pending:
            number = pending.pop(0)
            for pid in list(children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, number)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)  # signals are forwarded at the top of the loop
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        if stopping or failed:
            continue
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > max_restarts:
            log.error("worker %d exited (%d) too often; stopping", index, code)
            failed = True
            pending.append(signal.SIGTERM)
            continue
        log.warning("worker %d (pid %d) exited with %d; starting it again", index, pid, code)
        children[_spawn(index, child)] = index
    if on_stop is not None:
        on_stop()
    return 1 if failed else 0
