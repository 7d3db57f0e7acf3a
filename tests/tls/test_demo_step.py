"""The `make demo` step for DANCE over TLS runs and every case goes as expected."""

from __future__ import annotations

import io

from dance.demo.tls import run_tls


def test_demo_step() -> None:
    out = io.StringIO()
    assert run_tls(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("REFUSED") == 3 and text.count("ACCEPTED") == 1
    assert "backend: hello sensor7._device.example.test" in text
