"""The `make demo` part for LDAP (part J): alice binds through the front to a real slapd and
Who Am I? answers her DN; an unpublished CA and a domain outside the allow-list are refused
before slapd is contacted; without slapd the part is skipped."""

from __future__ import annotations

import io

import pytest

from dance.demo import ldap as demo
from dance.demo.ldap import run_ldap
from tests.conftest import require_binary


@pytest.mark.integration
def test_demo_part() -> None:
    require_binary("slapd")
    require_binary("slapadd")
    out = io.StringIO()
    assert run_ldap(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("  ok ") == 4
    who = "SASL EXTERNAL; Who Am I? dn:uid=alice,ou=people,dc=example,dc=test"
    assert text.count(who) == 2  # LDAPS and StartTLS
    assert "ok  alice@example.test from a CA not in DNS      REFUSED; slapd contacted: no" in text
    assert "ok  frank@outside.test (outside the allow-list)  REFUSED; slapd contacted: no" in text
    assert "{'no-match': 1, 'not-allowed': 1}" in text


def test_demo_part_skipped_without_slapd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo.shutil, "which", lambda *a, **k: None)
    out = io.StringIO()
    assert run_ldap(out) == 0
    assert "(skipped: slapd is not installed; apt-get install slapd)" in out.getvalue()
    assert "  ok " not in out.getvalue()


def test_demo_part_skipped_without_the_ldap_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ldap3" else real(name, *a)
    )
    out = io.StringIO()
    assert run_ldap(out) == 0
    assert "(skipped: install dance-dane[ldap] (ldap3))" in out.getvalue()
