"""The embedded authority: a small DNSSEC-signing authoritative server for DANCE zones.

``dance authority`` is to Knot/BIND/PowerDNS what SQLite is to PostgreSQL: the default for a
laptop or a test bench with no DNS infrastructure. It serves the zones of a directory, signs
them online (ECDSA P-256 or Ed25519, NSEC or NSEC3), accepts RFC 2136 dynamic updates
authenticated with TSIG (the same updates ``dance publish`` sends to Knot), persists every
change atomically, and serves AXFR with TSIG to secondaries. See docs/authority.md.
"""

import dance._warnings  # noqa: F401  (before any dns.dnssec import: see that module)
from dance.authority.errors import AuthorityError
from dance.authority.limits import Limits
from dance.authority.server import Authority
from dance.authority.store import ALGORITHMS, KeyPolicy, ZoneDir, trust_anchor_text
from dance.authority.xot import XoTConfig
from dance.tsig import (
    TSIGError,
    TSIGKey,
    generate_tsig_key,
    keyring,
    load_tsig_keys,
    parse_tsig_keys,
    tsig_key_from_env,
    write_tsig_key,
)

__all__ = [
    "ALGORITHMS",
    "Authority",
    "AuthorityError",
    "KeyPolicy",
    "Limits",
    "TSIGError",
    "TSIGKey",
    "XoTConfig",
    "ZoneDir",
    "generate_tsig_key",
    "keyring",
    "load_tsig_keys",
    "parse_tsig_keys",
    "trust_anchor_text",
    "tsig_key_from_env",
    "write_tsig_key",
]
