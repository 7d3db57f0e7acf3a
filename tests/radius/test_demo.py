"""The `make demo` part for RadSec (part L): through `dance radsec-proxy`, FreeRADIUS accepts the
access point whose key is published and sees its DANCE-Client-Name; another key for the same
name and a spoofed DANCE-Client-Name are refused and FreeRADIUS gets nothing; without
FreeRADIUS the part is skipped."""

from __future__ import annotations

import io

import pytest

import dance.testkit.freeradius
from dance.demo.radsec import run_radsec
from tests.conftest import require_binary


@pytest.mark.integration
def test_demo_part() -> None:
    require_binary("freeradius", "radiusd")
    out = io.StringIO()
    assert run_radsec(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("  ok ") == 3
    assert 'Access-Accept; FreeRADIUS saw DANCE-Client-Name = "ap1._nas.example.test"' in text
    assert "REFUSED no-match: TLS alert handshake_failure; FreeRADIUS got: nothing" in text
    assert "REFUSED spoofed-identity: closed, no answer; FreeRADIUS got: nothing" in text
    assert (
        "front: TLS refusals {'no-match': 1}, RADIUS refusals {'spoofed-identity': 1}, "
        "1 request(s) forwarded" in text
    )


def test_demo_part_skipped_without_freeradius(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dance.testkit.freeradius, "have_freeradius", lambda: False)
    out = io.StringIO()
    assert run_radsec(out) == 0
    assert "part L: RadSec" in out.getvalue()
    assert "(skipped: freeradius is not installed" in out.getvalue()
    assert "  ok " not in out.getvalue()
