"""TLSA records: the value type, generation from certificates and keys, and RFC 7671 matching."""

from dance.tlsa.generate import all_records, association_data, make_record
from dance.tlsa.match import (
    DEFAULT_POLICY,
    MatchPolicy,
    server_owner,
    usable_records,
    verify,
    verify_server,
)
from dance.tlsa.record import MalformedRecord, MatchingType, Selector, TLSARecord, Usage

__all__ = [
    "DEFAULT_POLICY",
    "MalformedRecord",
    "MatchPolicy",
    "MatchingType",
    "Selector",
    "TLSARecord",
    "Usage",
    "all_records",
    "association_data",
    "make_record",
    "server_owner",
    "usable_records",
    "verify",
    "verify_server",
]
