"""The device side for blocking TLS sockets (paho-mqtt and other ``ssl.SSLSocket`` users).

:func:`dance.tls.client_context` installs ``dane_clientid`` for the memory-BIO ``SSLObject`` that
asyncio uses; the callbacks find their per-connection state through ex_data that
``DanceSSLObject`` attaches. A blocking client (paho-mqtt's ``tls_set_context``) wraps a socket
into an ``ssl.SSLSocket`` instead, which never gets that state, so the ClientName is not sent.
:func:`device_context` sets the context's ``sslsocket_class`` to :class:`DanceSSLSocket`, which
attaches the same state before its first handshake step.

    client = paho.mqtt.client.Client(...)
    client.tls_set_context(device_context(name=..., cert=..., key=..., cafile=...))
"""

from __future__ import annotations

import ctypes
import ssl
import weakref
from typing import Any

from dance.tls.bridge import (
    DEFAULT_CODEPOINT,
    REGISTRY,
    SSL_OFFSET,
    BridgeError,
    ConnectionState,
    _finalize,
    bridge,
)
from dance.tls.client import client_context

__all__ = ["DanceSSLSocket", "device_context"]


class DanceSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` whose ``SSL`` carries a dane_clientid state serial in ex_data."""

    dance_state: ConnectionState | None = None

    def _dance_attach(self) -> None:
        sslobj = getattr(self, "_sslobj", None)
        if self.dance_state is not None or sslobj is None:
            return
        lib = bridge()
        ssl_ptr = ctypes.c_void_p.from_address(id(sslobj) + SSL_OFFSET).value
        if not ssl_ptr or lib.SSL_get_SSL_CTX(ssl_ptr) != getattr(
            self.context, "_dance_ctx_ptr", None
        ):
            raise BridgeError("layout self-check failed: SSL* does not belong to the context")
        state = REGISTRY.new(False)
        if lib.SSL_set_ex_data(ssl_ptr, lib.ex_index, state.serial) != 1:
            REGISTRY.drop(state.serial)
            raise BridgeError("SSL_set_ex_data failed")
        self.dance_state = state
        weakref.finalize(self, _finalize, state.serial, None)

    def do_handshake(self, block: bool = False) -> None:
        self._dance_attach()
        super().do_handshake(block)


def device_context(
    *,
    name: str,
    cert: str,
    key: str,
    codepoint: int = DEFAULT_CODEPOINT,
    cafile: str | None = None,
    verify_server: bool = True,
    **options: Any,
) -> ssl.SSLContext:
    """:func:`dance.tls.client_context` for blocking sockets: ``wrap_socket`` sends the name."""
    context = client_context(
        name=name,
        cert=cert,
        key=key,
        codepoint=codepoint,
        cafile=cafile,
        verify_server=verify_server,
        **options,
    )
    context.sslsocket_class = DanceSSLSocket
    return context
