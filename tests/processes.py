"""`dance` commands run as processes by the tests, and the Prometheus pages they serve."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time


def dance_process(*args: str) -> subprocess.Popen[str]:
    """``python -m dance.cli ARGS`` with this test run's import path, stdout and stderr piped
    (text)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen(
        [sys.executable, "-m", "dance.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def metrics_page(port: int, timeout: float = 60) -> str:
    """``GET /metrics`` on 127.0.0.1:``port``, tried again every 0.2 s until it answers (the
    endpoint of a worker may not listen yet); fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def counter_sums(pages: list[str], *prefixes: str) -> dict[str, float]:
    """The samples whose line starts with one of ``prefixes``, summed over ``pages`` (one page
    a worker), by name and labels."""
    counts: dict[str, float] = {}
    for text in pages:
        for line in text.splitlines():
            if line.startswith(prefixes):
                name, value = line.rsplit(" ", 1)
                counts[name] = counts.get(name, 0.0) + float(value)
    return counts
