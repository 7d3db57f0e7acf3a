"""The `make demo` step for LoRaWAN mutual DANE runs and every case goes as expected."""

from __future__ import annotations

import io

from dance.demo.lorawan import run_lorawan


def test_demo_step() -> None:
    out = io.StringIO()
    assert run_lorawan(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("  ok ") == 6
    assert "JoinAns Success" in text and "refused server-key-mismatch" in text
    assert text.count("read by the join server: no") == 4
    assert "_443._tcp.js.example.test. 60 IN TLSA 3 1 1 " in text
