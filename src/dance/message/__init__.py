"""Signed and encrypted messages with DANCE identities: JWS/JWE (joserfc) and COSE (cbor2).

    from dance.message import MessageVerifier, sign_jws, sign_cose
    token = sign_jws(payload, key, "sensor7._device.example.com")      # name only: key in DNS
    identity, payload = await MessageVerifier(authenticator).verify(token)

Optional dependencies (extra ``messages``): joserfc for JOSE, cbor2 for COSE. Importing this
package works without them; using a format whose library is missing raises
:class:`MissingExtra` (reason ``missing-extra``) naming the extra to install.
"""

from dance.message.cose import COSE_ALGORITHMS, parse_cose_sign1, sign_cose
from dance.message.coseenc import decrypt_cose, encrypt_cose
from dance.message.errors import MessageError, MessageReason, MissingExtra
from dance.message.jose import decrypt_jwe, encrypt_jwe, parse_jws, sign_jws
from dance.message.keys import (
    SIGNATURE_ALGORITHMS,
    allowed_algorithms,
    dns_uri,
    load_private_key,
    parse_dns_uri,
)
from dance.message.model import Limits, ParsedMessage, VerifiedMessage
from dance.message.verify import MessageVerifier, PublishedKey, parse_message

__all__ = [
    "COSE_ALGORITHMS",
    "SIGNATURE_ALGORITHMS",
    "Limits",
    "MessageError",
    "MessageReason",
    "MessageVerifier",
    "MissingExtra",
    "ParsedMessage",
    "PublishedKey",
    "VerifiedMessage",
    "allowed_algorithms",
    "decrypt_cose",
    "decrypt_jwe",
    "dns_uri",
    "encrypt_cose",
    "encrypt_jwe",
    "load_private_key",
    "parse_cose_sign1",
    "parse_dns_uri",
    "parse_jws",
    "parse_message",
    "sign_cose",
    "sign_jws",
]
