"""RadSec (RADIUS over TLS, RFC 6614) behind DANCE (seed 4.1.12): a strict sans-I/O RADIUS codec,
the front that authenticates RADIUS clients with ``dane_clientid`` and relays their packets to a
RADIUS server on loopback with the authenticated ClientName, and a small RadSec client."""

from dance.radius.client import RadsecClient, access_request
from dance.radius.identity import DEFAULT_IDENTITY_ATTRIBUTE, IdentityAttribute
from dance.radius.packet import (
    RADSEC_SECRET,
    Attribute,
    Packet,
    RadiusError,
    StreamFramer,
    parse_packet,
)
from dance.radius.proxy import (
    DEFAULT_PORT,
    RadsecProxy,
    RadsecProxyConfig,
    RadsecProxyStats,
    start_radsec_proxy,
)

__all__ = [
    "DEFAULT_IDENTITY_ATTRIBUTE",
    "DEFAULT_PORT",
    "RADSEC_SECRET",
    "Attribute",
    "IdentityAttribute",
    "Packet",
    "RadiusError",
    "RadsecClient",
    "RadsecProxy",
    "RadsecProxyConfig",
    "RadsecProxyStats",
    "StreamFramer",
    "access_request",
    "parse_packet",
    "start_radsec_proxy",
]
