"""The device side for blocking TLS sockets (paho-mqtt and other ``ssl.SSLSocket`` users).

:func:`device_context` is :func:`dance.tls.client_context` (whose contexts send the
``dane_clientid`` ClientName on blocking sockets too) with the broker front authenticated by
DNS: before each connection the DNSSEC-validated TLSA records at ``_PORT._tcp.HOST`` are looked
up (HOST: the name given to ``connect``, PORT: the port connected to) and decide, with the rules
of `dance.tls.dane.server_policy` (RFC 6698/7671, RFC 7672's usages 3 and 2):

* ``dane``: secure records must exist and match the front's certificate;
* ``dane-or-pkix`` (the default when a resolver is given): DANE when secure records exist (no
  fallback when they do not match), the CA file or system store when the name provably has none;
  bogus or unreachable DNS refuses the front;
* ``pkix`` (the default without a resolver): the CA file or system store only.

A front that is refused is disconnected before the handshake returns: paho-mqtt's ``connect``
raises `dance.tls.ServerRejected` (a ``ConnectionError``) and no MQTT byte is sent.

    client = paho.mqtt.client.Client(...)
    client.tls_set_context(device_context(
        name="sensor7._device.example.com", cert=..., key=...,
        resolver=lambda: TLSAResolver(("127.0.0.1", 53), anchors=TrustAnchors.builtin_root())))
    client.connect("mqtt.example.com", 8883)
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from dance.tls.bridge import DEFAULT_CODEPOINT
from dance.tls.client import DanceSSLSocket, client_context
from dance.tls.dane import POLICIES, blocking_server_policy

__all__ = ["DanceSSLSocket", "device_context"]


def device_context(
    *,
    name: str,
    cert: str,
    key: str,
    codepoint: int = DEFAULT_CODEPOINT,
    cafile: str | None = None,
    verify_server: bool = True,
    server_auth: str | None = None,
    resolver: Callable[[], Any] | None = None,
    server_name: str | None = None,
    **options: Any,
) -> ssl.SSLContext:
    """A client context for paho-mqtt's ``tls_set_context`` presenting ``cert``/``key`` as
    ``name``, authenticating the front by ``server_auth`` (``dane``, ``pkix``,
    ``dane-or-pkix``; default: ``dane-or-pkix`` with a ``resolver``, else ``pkix``).

    ``resolver``: makes a DNS source for each connection (an async context manager with
    ``lookup_tlsa``, e.g. ``lambda: TLSAResolver(...)``). ``server_name``: the front's DNS name
    for the TLSA lookup when the client connects to an address (default: the host given to
    ``connect``). ``verify_server=False`` (tests only)
    verifies nothing and is refused with a DANE policy."""
    policy = server_auth or ("dane-or-pkix" if resolver is not None else "pkix")
    if policy not in POLICIES:
        raise ValueError(f"server_auth is one of {', '.join(POLICIES)}")
    server_policy = None
    if policy != "pkix":
        if resolver is None:
            raise ValueError(f"server_auth {policy!r} needs a resolver")
        if not verify_server:
            raise ValueError(f"server_auth {policy!r} cannot be combined with verify_server=False")
        server_policy = blocking_server_policy(resolver, policy=policy, server_name=server_name)
    return client_context(
        name=name,
        cert=cert,
        key=key,
        codepoint=codepoint,
        cafile=cafile,
        verify_server=verify_server,
        server_policy=server_policy,
        **options,
    )
