"""The proposed `make demo` step runs end to end against the embedded authority."""

from __future__ import annotations

import io

import pytest


def test_run_provision_demo() -> None:
    pytest.importorskip("dance.authority.server")
    from dance.demo.provision import run_provision

    out = io.StringIO()
    assert run_provision(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert "NOTAUTH" in text and "zone unchanged: True" in text
    assert text.count("ACCEPTED") == 3
    assert "revoked device" in text and "REJECTED" in text
