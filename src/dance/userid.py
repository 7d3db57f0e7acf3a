"""User ids in certificates for the ``_user`` profile (architecture-10 section 4.1.3).

Candidates, collected from the end-entity certificate's subjectAltName:

* otherName ``uid`` (OID 0.9.2342.19200300.100.1.1, RFC 4519), value UTF8String (IA5String and
  PrintableString are accepted too);
* otherName SmtpUTF8Mailbox (OID 1.3.6.1.5.5.7.8.9, RFC 9598) and rfc822Name, when the mailbox's
  domain equals the user domain D (compared in A-label form).

Exactly one distinct user id (after NFC normalization and lowercasing) must result; none, or
several that disagree, is a rejection. The identity is ``uid@D`` with D in U-label form.
"""

from __future__ import annotations

import unicodedata

import idna
from cryptography import x509

from dance.identity import Reason, Rejection
from dance.names import to_a_label_domain, to_u_label_domain

__all__ = ["OID_SMTP_UTF8_MAILBOX", "OID_UID", "encode_utf8_string", "extract", "mailboxes"]

OID_UID = x509.ObjectIdentifier("0.9.2342.19200300.100.1.1")
OID_SMTP_UTF8_MAILBOX = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.9")

_STRING_TAGS = {0x0C: "utf-8", 0x16: "ascii", 0x13: "ascii"}  # UTF8, IA5, Printable
MAX_USER_ID = 256


def encode_utf8_string(text: str) -> bytes:
    """DER UTF8String, the value encoding used for the uid and SmtpUTF8Mailbox otherNames."""
    raw = text.encode("utf-8")
    if len(raw) < 0x80:
        return bytes((0x0C, len(raw))) + raw
    length = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes((0x0C, 0x80 | len(length))) + length + raw


def _decode_string(der: bytes) -> str | None:
    """Decode one DER string TLV; None if it is not exactly one supported string."""
    if len(der) < 2 or der[0] not in _STRING_TAGS:
        return None
    first = der[1]
    pos = 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2:
            return None
        length = int.from_bytes(der[2 : 2 + count], "big")
        pos += count
    if pos + length != len(der):
        return None
    try:
        return der[pos:].decode(_STRING_TAGS[der[0]])
    except UnicodeDecodeError:
        return None


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def mailboxes(cert: x509.Certificate) -> list[str]:
    """All rfc822Name and SmtpUTF8Mailbox values of the certificate (as written)."""
    san = _san(cert)
    if san is None:
        return []
    found = list(san.get_values_for_type(x509.RFC822Name))
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == OID_SMTP_UTF8_MAILBOX:
            value = _decode_string(other.value)
            if value is not None:
                found.append(value)
    return found


def _valid_uid(uid: str) -> bool:
    return (
        0 < len(uid) <= MAX_USER_ID
        and "@" not in uid
        and all(unicodedata.category(ch)[0] not in "CZ" for ch in uid)
    )


def _normalize(uid: str) -> str:
    return unicodedata.normalize("NFC", uid).lower()


def extract(cert: x509.Certificate, domain: str) -> str | Rejection:
    """The ``uid@domain`` identity of a user certificate for ``domain`` (A-labels), or why not."""
    san = _san(cert)
    candidates: set[str] = set()
    invalid: list[str] = []
    if san is not None:
        for other in san.get_values_for_type(x509.OtherName):
            if other.type_id != OID_UID:
                continue
            value = _decode_string(other.value)
            if value is None or not _valid_uid(value):
                invalid.append(repr(value))
                continue
            candidates.add(_normalize(value))
    for mailbox in mailboxes(cert):
        local, sep, mail_domain = mailbox.rpartition("@")
        if not sep:
            continue
        try:
            same = to_a_label_domain(mail_domain) == domain
        except (idna.IDNAError, UnicodeError, ValueError):
            same = False
        if not same:
            continue
        if not _valid_uid(local):
            invalid.append(repr(local))
            continue
        candidates.add(_normalize(local))
    if invalid:
        return Rejection(Reason.NO_USER_ID, f"invalid user id in certificate: {invalid[0]}")
    if not candidates:
        return Rejection(Reason.NO_USER_ID, f"no uid otherName and no mailbox in {domain}")
    if len(candidates) > 1:
        return Rejection(
            Reason.AMBIGUOUS_USER_ID, f"{len(candidates)} different user ids in the certificate"
        )
    return f"{candidates.pop()}@{to_u_label_domain(domain)}"
