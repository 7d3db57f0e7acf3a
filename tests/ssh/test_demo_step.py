"""The proposed `make demo` step for SSH runs and every case goes as expected."""

from __future__ import annotations

import io

from dance.demo.ssh import run_ssh


def test_demo_step() -> None:
    out = io.StringIO()
    assert run_ssh(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("ACCEPTED") == 2 and text.count("REFUSED") == 4
    assert "dns-bogus" in text
