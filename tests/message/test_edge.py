"""The edge scenario (architecture 4.1.6): sensor signs, gateway forwards (maybe altering),
the cloud verifies and attributes the measurement to the sensor's DNS name."""

from __future__ import annotations

import io
import json

import pytest

from dance.demo.message import run_messages
from dance.message import MessageError, MessageReason, sign_cose, sign_jws
from dance.message.jose import b64e
from tests.message.kit import GATEWAY, GATEWAY_ID, NOW, SENSOR, SENSOR_ID, World

MEASUREMENT = json.dumps({"sensor": SENSOR, "t": 21.5, "unit": "C"}).encode()
ALTERED = json.dumps({"sensor": SENSOR, "t": 35.0, "unit": "C"}).encode()


def forward(token: str | bytes) -> str | bytes:
    """The gateway stores and forwards the message unchanged (bytes in, bytes out)."""
    return token if isinstance(token, bytes) else str(token)


@pytest.mark.parametrize("fmt", ["jws", "cose"])
def test_cloud_attributes_forwarded_measurement_to_sensor(world: World, fmt: str) -> None:
    token = (
        sign_jws(MEASUREMENT, SENSOR_ID.key, SENSOR)
        if fmt == "jws"
        else sign_cose(MEASUREMENT, SENSOR_ID.key, SENSOR)
    )
    identity, payload = world.verify(forward(token))
    assert identity.identity == SENSOR  # attributed to the sensor, not the gateway
    assert json.loads(payload) == {"sensor": SENSOR, "t": 21.5, "unit": "C"}


def test_altered_payload_refused(world: World) -> None:
    head, _, sig = sign_jws(MEASUREMENT, SENSOR_ID.key, SENSOR).split(".")
    with pytest.raises(MessageError) as err:
        world.verify(".".join([head, b64e(ALTERED), sig]))
    assert err.value.reason is MessageReason.BAD_SIGNATURE
    cose = sign_cose(MEASUREMENT, SENSOR_ID.key, SENSOR)
    with pytest.raises(MessageError) as err:
        world.verify(cose.replace(b"21.5", b"35.0"))
    assert err.value.reason is MessageReason.BAD_SIGNATURE


def test_resigned_by_gateway_refused(world: World) -> None:
    # with the gateway's certificate: it is not the key published for the sensor's name
    for token in (
        sign_jws(ALTERED, GATEWAY_ID.key, SENSOR, certificates=[GATEWAY_ID.cert]),
        sign_cose(ALTERED, GATEWAY_ID.key, SENSOR, certificates=[GATEWAY_ID.cert]),
    ):
        with pytest.raises(MessageError) as err:
            world.verify(token)
        assert err.value.reason is MessageReason.KEY_NOT_PUBLISHED
        assert err.value.signer == SENSOR
    # name only: no key published for the sensor verifies the gateway's signature
    for token in (
        sign_jws(ALTERED, GATEWAY_ID.key, SENSOR),
        sign_cose(ALTERED, GATEWAY_ID.key, SENSOR),
    ):
        with pytest.raises(MessageError) as err:
            world.verify(token)
        assert err.value.reason is MessageReason.BAD_SIGNATURE


def test_gateway_own_signature_is_attributed_to_gateway(world: World) -> None:
    identity, payload = world.verify(sign_jws(ALTERED, GATEWAY_ID.key, GATEWAY))
    assert identity.identity == GATEWAY != SENSOR and payload == ALTERED


def test_demo_step_outcomes_as_expected() -> None:
    out = io.StringIO()
    assert run_messages(out, NOW) == 0, out.getvalue()
    text = out.getvalue()
    assert "BAD" not in text and "key-not-published" in text and "bad-signature" in text
