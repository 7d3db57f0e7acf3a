"""LDAP behind DANCE (seed architecture Example 3): users of a domain authenticated by the
domain's user CA in DNS (``_user.D``), answered with SASL EXTERNAL, relayed to slapd over
ldapi:// with their identity as the SASL authorization identity."""

from dance.ldap.ber import DEFAULT_MAX_DEPTH, DEFAULT_MAX_PDU, BERError, PDUReader
from dance.ldap.messages import LDAPProtocolError
from dance.ldap.proxy import LDAPProxy, LDAPProxyConfig, LDAPProxyStats, start_ldap_proxy

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PDU",
    "BERError",
    "LDAPProtocolError",
    "LDAPProxy",
    "LDAPProxyConfig",
    "LDAPProxyStats",
    "PDUReader",
    "start_ldap_proxy",
]
