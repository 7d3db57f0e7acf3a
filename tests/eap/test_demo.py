"""The `make demo` part for EAP-TLS (part K): FreeRADIUS accepts the device whose key is
published and refuses the one whose name publishes another key (reason no-match); without
FreeRADIUS or eapol_test the part is skipped."""

from __future__ import annotations

import io

import pytest

import dance.testkit.eapol
from dance.demo.eap import run_eap
from tests.conftest import require_binary


@pytest.mark.integration
def test_demo_part() -> None:
    require_binary("freeradius", "radiusd")
    require_binary("eapol_test")
    out = io.StringIO()
    assert run_eap(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("  ok ") == 2
    assert "Access-Accept  User-Name=sensor1._device.example.test" in text
    assert "ok  sensor2, its name publishes another key      Access-Reject  no-match" in text
    assert "daemon: 1 accepted, refusals by reason {'no-match': 1}" in text


def test_demo_part_skipped_without_freeradius(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dance.testkit.eapol, "have_binaries", lambda: False)
    out = io.StringIO()
    assert run_eap(out) == 0
    assert "(skipped: freeradius or eapol_test is not installed" in out.getvalue()
    assert "  ok " not in out.getvalue()
