"""The proposed `make demo` step runs end to end with the expected outcomes."""

from __future__ import annotations

import io

from dance.authority.demo_step import run_authority


def test_demo_step() -> None:
    out = io.StringIO()
    assert run_authority(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD " not in text
    assert "NOTAUTH (TSIG error BADSIG); zone unchanged: True" in text
    assert "REJECTED" in text and text.count("ACCEPTED") == 3
