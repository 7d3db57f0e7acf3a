"""MQTT behind DANCE (seed Example 4): a strict sans-I/O codec and the front that gives the broker
the authenticated ClientName as the MQTT username."""

from dance.mqtt.codec import (
    DEFAULT_MAX_REMAINING,
    Connect,
    MQTTError,
    Packet,
    PacketReader,
    encode_connect,
    parse_connect,
)
from dance.mqtt.proxy import MQTTProxy, MQTTProxyConfig, MQTTProxyStats, start_mqtt_proxy

__all__ = [
    "DEFAULT_MAX_REMAINING",
    "Connect",
    "MQTTError",
    "MQTTProxy",
    "MQTTProxyConfig",
    "MQTTProxyStats",
    "Packet",
    "PacketReader",
    "encode_connect",
    "parse_connect",
    "start_mqtt_proxy",
]
