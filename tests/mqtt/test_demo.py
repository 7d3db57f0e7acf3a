"""The `make demo` part for MQTT runs and every case goes as expected, the device
authenticating the front by DANE."""

from __future__ import annotations

import datetime
import io
import re

import pytest
from cryptography import x509

from dance import certs
from dance.demo import mqtt as demo
from dance.demo.mqtt import run_mqtt
from dance.tlsa import TLSARecord
from tests.conftest import require_binary

NOW = datetime.datetime.now(datetime.UTC)

pytestmark = pytest.mark.integration


def test_demo_part() -> None:
    require_binary("mosquitto")
    out = io.StringIO()
    assert run_mqtt(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("  ok ") == 6
    assert "broker contacted: yes" not in text
    assert "'not-connect': 1" in text
    # the front's key is published once it listens, and the device checks it (no CA)
    assert re.search(r"_\d+\._tcp\.mqtt\.example\.test\. 60 IN TLSA 3 1 1 ", text)
    assert "ok  a server with another key on the path" in text
    assert "REFUSED by the device: no-match; MQTT bytes sent: 0" in text


def test_demo_part_fails_when_the_front_is_not_the_published_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DANE check decides: with another key published for the front, the device refuses
    it and the part reports BAD lines."""
    require_binary("mosquitto")
    real = demo.make_record
    other = certs.self_signed(certs.generate_key("ec-p256"), demo.FRONT, now=NOW)

    def wrong_front_record(cert: x509.Certificate, *args: int) -> TLSARecord:
        if cert.subject.rfc4514_string() == f"CN={demo.FRONT}":
            cert = other  # the front's name publishes another key
        return real(cert, *args)

    monkeypatch.setattr(demo, "make_record", wrong_front_record)
    out = io.StringIO()
    assert run_mqtt(out) == 1
    text = out.getvalue()
    assert "BAD sensor7 publishes" in text
    assert "the front was not authenticated: no-match" in text
