"""A server on an event loop in a thread of its own, for the tests whose clients block (paho-mqtt,
radclient, ldap3) and so cannot share the server's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

T = TypeVar("T")


def serve_in_thread(
    serve: Callable[[asyncio.AbstractEventLoop], AbstractAsyncContextManager[T]], what: str
) -> Iterator[T]:
    """Enter ``serve(loop)`` on a new loop in a daemon thread and yield what it gives (for a
    fixture: ``yield from``); afterwards it is left on that loop, the thread joined and the loop
    closed. Fails the test with "``what`` did not start" when it does not start within 30 s."""
    loop = asyncio.new_event_loop()
    ready: dict[str, T] = {}
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        async with serve(loop) as front:
            ready["front"] = front
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(main())
        finally:
            started.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30) and "front" in ready, f"{what} did not start"
    try:
        yield ready["front"]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
