"""Mutual DANE between a LoRaWAN network server and join server (architecture Example 5).

The join server is a `dance.tls` server (``dane_clientid``: the network server is authenticated
by the TLSA records of its ClientName); the network server authenticates the join server by the
TLSA records at ``_PORT._tcp.<join server name>``. No CA anywhere: both keys are self-signed and
published as DANE-EE. They exchange TS002 JoinReq/JoinAns JSON over HTTP/1.1. See
docs/lorawan.md.
"""

from dance.lorawan.join_server import JoinServer
from dance.lorawan.messages import (
    JOIN_ANS,
    JOIN_REQ,
    MAX_MESSAGE,
    RESULT_CODES,
    MessageError,
    encode,
    parse,
    validate,
)
from dance.lorawan.network_server import (
    JoinError,
    JoinResult,
    TLSALookup,
    authenticate_server,
    join_request,
)

__all__ = [
    "JOIN_ANS",
    "JOIN_REQ",
    "MAX_MESSAGE",
    "RESULT_CODES",
    "JoinError",
    "JoinResult",
    "JoinServer",
    "MessageError",
    "TLSALookup",
    "authenticate_server",
    "encode",
    "join_request",
    "parse",
    "validate",
]
