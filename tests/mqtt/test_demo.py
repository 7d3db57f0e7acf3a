"""The proposed `make demo` part for MQTT runs and every case goes as expected."""

from __future__ import annotations

import io

import pytest

from dance.demo.mqtt import run_mqtt
from tests.conftest import require_binary

pytestmark = pytest.mark.integration


def test_demo_part() -> None:
    require_binary("mosquitto")
    out = io.StringIO()
    assert run_mqtt(out) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text
    assert text.count("ok ") == 5
    assert "broker contacted: yes" not in text
    assert "'not-connect': 1" in text
