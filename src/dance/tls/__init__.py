"""DANCE over TLS: ``dane_clientid`` on the system OpenSSL of Python's ``ssl`` module.

    from dance.tls import serve, connect

See docs/tls.md. The OpenSSL bridge (`dance.tls.bridge`) refuses to start with
:class:`BridgeError` when this Python's OpenSSL cannot be reached safely.
"""

from dance.tls.bridge import (
    DEFAULT_CODEPOINT,
    BridgeError,
    ConnectionState,
    TLSStats,
    announce_client_cas,
    check_codepoint,
    configure_client,
    configure_server,
)
from dance.tls.client import (
    DanceSSLSocket,
    ProbeResult,
    ServerCheck,
    ServerPolicy,
    ServerRejected,
    client_context,
    connect,
    negotiated,
    probe,
    server_chain,
    wrap_socket,
)
from dance.tls.proxyv2 import DEFAULT_TLV_TYPE, ProxyV2Error, encode_header
from dance.tls.server import DanceServer, Handler, make_server_context, serve

__all__ = [
    "DEFAULT_CODEPOINT",
    "DEFAULT_TLV_TYPE",
    "BridgeError",
    "ConnectionState",
    "DanceSSLSocket",
    "DanceServer",
    "Handler",
    "ProbeResult",
    "ProxyV2Error",
    "ServerCheck",
    "ServerPolicy",
    "ServerRejected",
    "TLSStats",
    "announce_client_cas",
    "check_codepoint",
    "client_context",
    "configure_client",
    "configure_server",
    "connect",
    "encode_header",
    "make_server_context",
    "negotiated",
    "probe",
    "serve",
    "server_chain",
    "wrap_socket",
]
