"""DNSSEC-validated TLSA discovery for DANCE.

``dance`` validates DNSSEC itself, from configured trust anchors, instead of trusting the AD bit
of whatever resolver answers (unless explicitly configured to, over a secure channel).

Public API::

    from dance.dns import TLSAResolver, TrustAnchors, Outcome

    resolver = TLSAResolver(("127.0.0.1", 53), anchors=TrustAnchors.builtin_root())
    result = await resolver.lookup_tlsa("sensor7._device.example.com")
    if result.outcome is Outcome.SECURE:
        ...  # result.records: TLSA RDATA in wire form; cacheable for result.ttl seconds
"""

import dance._warnings  # noqa: F401  (before any dns.dnssec import: see that module)
from dance.dns.anchors import ROOT_ANCHOR_TEXT, AnchorError, TrustAnchors, ZoneAnchor
from dance.dns.cache import CacheStats, DecisionCache, TTLCache
from dance.dns.resolver import ConfigurationError, TLSAResolver
from dance.dns.result import LookupResult, Outcome, Reason
from dance.dns.transport import (
    MalformedResponse,
    StreamTransport,
    Transport,
    UdpTransport,
    spki_pin,
)
from dance.dns.validator import Limits

Resolver = TLSAResolver
Validator = Limits

__all__ = [
    "ROOT_ANCHOR_TEXT",
    "AnchorError",
    "CacheStats",
    "ConfigurationError",
    "DecisionCache",
    "Limits",
    "LookupResult",
    "MalformedResponse",
    "Outcome",
    "Reason",
    "Resolver",
    "StreamTransport",
    "TLSAResolver",
    "TTLCache",
    "Transport",
    "TrustAnchors",
    "UdpTransport",
    "Validator",
    "ZoneAnchor",
    "spki_pin",
]
