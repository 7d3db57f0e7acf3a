"""dance: DANE Authentication for Network Clients Everywhere.

Clients, devices, users and signed messages authenticated by keys published in DNSSEC-signed
TLSA records. The pure core (`dance.names`, `dance.tlsa`, `dance.identity`) decides; the layers
around it fetch and deliver.

The public names below are imported on first use (PEP 562), so that ``import dance.x`` costs only
what ``x`` needs: the SSH key hook, run by sshd for every offered key, imports almost nothing.
"""

__version__ = "0.1.0"

_LAZY = {
    "CertificateChain": "dance.credentials",
    "CredentialError": "dance.credentials",
    "RawPublicKey": "dance.credentials",
    "Identity": "dance.identity",
    "Reason": "dance.identity",
    "Rejection": "dance.identity",
    "Result": "dance.identity",
    "ClientName": "dance.names",
    "InvalidName": "dance.names",
    "NameFormat": "dance.names",
    "parse_client_name": "dance.names",
    "MatchPolicy": "dance.tlsa",
    "TLSARecord": "dance.tlsa",
    "make_record": "dance.tlsa",
    "verify": "dance.tlsa",
}

TYPE_CHECKING = False  # not typing's: importing typing costs more than this whole module
if TYPE_CHECKING:
    from typing import Any

    from dance.credentials import CertificateChain, CredentialError, RawPublicKey
    from dance.identity import Identity, Reason, Rejection, Result
    from dance.names import ClientName, InvalidName, NameFormat, parse_client_name
    from dance.tlsa import MatchPolicy, TLSARecord, make_record, verify


def __getattr__(name: str) -> "Any":
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dance' has no attribute {name!r}")
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
