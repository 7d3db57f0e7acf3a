"""Per-door input counts and times of the fuzz tests, printed at the end of the session and
written as JSON to ``$DANCE_FUZZ_REPORT`` when set (bench/fuzz_long.py reads it)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz.common import COUNTS, SECONDS


def _door(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    name = module.__name__.rsplit(".", 1)[-1] if module is not None else "other"
    return name.removeprefix("test_")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    start = time.perf_counter()
    yield
    SECONDS[_door(item)] += time.perf_counter() - start


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COUNTS:
        return
    terminalreporter.write_sep("-", "fuzz inputs per front door")
    for door in sorted(set(COUNTS) | set(SECONDS)):
        seconds = SECONDS.get(door, 0.0)
        rate = COUNTS[door] / seconds if seconds else 0.0
        terminalreporter.write_line(
            f"{door:12s} {COUNTS[door]:>10,d} inputs {seconds:8.1f} s {rate:10,.0f}/s"
        )
    terminalreporter.write_line(f"{'total':12s} {sum(COUNTS.values()):>10,d} inputs")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("DANCE_FUZZ_REPORT")
    if path and COUNTS:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"counts": dict(COUNTS), "seconds": dict(SECONDS)}, out)
