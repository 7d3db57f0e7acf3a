"""dance: DANE Authentication for Network Clients Everywhere.

Clients, devices, users and signed messages authenticated by keys published in DNSSEC-signed
TLSA records. The pure core (`dance.names`, `dance.tlsa`, `dance.identity`) decides; the layers
around it fetch and deliver.
"""

import dance._warnings  # noqa: F401  (first: silences dnspython's DSA import warning)
from dance.credentials import CertificateChain, CredentialError, RawPublicKey
from dance.identity import Identity, Reason, Rejection, Result
from dance.names import ClientName, InvalidName, NameFormat, parse_client_name
from dance.tlsa import MatchPolicy, TLSARecord, make_record, verify

__version__ = "0.1.0"

__all__ = [
    "CertificateChain",
    "ClientName",
    "CredentialError",
    "Identity",
    "InvalidName",
    "MatchPolicy",
    "NameFormat",
    "RawPublicKey",
    "Reason",
    "Rejection",
    "Result",
    "TLSARecord",
    "__version__",
    "make_record",
    "parse_client_name",
    "verify",
]
