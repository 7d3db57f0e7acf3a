"""User ids in certificates for the ``_user`` profile (architecture-10 section 4.1.3).

Candidates, collected from the end-entity certificate's subjectAltName:

* otherName ``uid`` (OID 0.9.2342.19200300.100.1.1, RFC 4519), value UTF8String (IA5String and
  PrintableString are accepted too);
* otherName SmtpUTF8Mailbox (OID 1.3.6.1.5.5.7.8.9, RFC 9598) and rfc822Name, when the mailbox's
  domain equals the user domain D (compared in A-label form).

Every candidate must satisfy the comparison profile ``dance-uid`` (:func:`check_uid`, based on
PRECIS UsernameCaseMapped, RFC 8265 section 3.3, and the IdentifierClass of RFC 8264, but
*refusing* what that profile would map): a user id that width mapping, case mapping or NFC
would turn into another string (U+212A KELVIN SIGN, fullwidth letters, ligatures, decomposed
sequences, non-ASCII capitals) is refused with ``bad-user-id``, never folded. The only mapping is
ASCII ``A-Z`` to ``a-z``. Exactly one distinct user id must then result; none, or several that
disagree, is a rejection. The identity is ``uid@D`` with D in U-label form.
"""

from __future__ import annotations

import unicodedata

import idna
from cryptography import x509

from dance.identity import Reason, Rejection
from dance.names import to_a_label_domain, to_u_label_domain

__all__ = [
    "OID_SMTP_UTF8_MAILBOX",
    "OID_UID",
    "check_uid",
    "encode_utf8_string",
    "extract",
    "mailboxes",
    "uid_key",
]

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


# RFC 8264 9.9 OldHangulJamo (Hangul_Syllable_Type L, V, T): DISALLOWED in PRECIS
_OLD_HANGUL_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))
# non-ASCII general categories of the IdentifierClass "LetterDigits" (RFC 8264 9.1), without Lu
# and Lt: a capital would be changed by case mapping, so it is refused instead
_LETTER_DIGITS = {"Ll", "Lo", "Lm", "Mn", "Mc", "Nd"}
_RTL = {"R", "AL", "AN"}
# RFC 8264 9.6 Exceptions that are DISALLOWED although their category is kept above
_EXCEPTIONS_DISALLOWED = {0x0640, 0x07FA, 0x302E, 0x302F, 0x3031, 0x3032, 0x3033, 0x3034}
_EXCEPTIONS_DISALLOWED |= {0x3035, 0x303B}


def _code_point_problem(ch: str) -> str | None:
    cp = ord(ch)
    if 0x21 <= cp <= 0x7E:  # ASCII7 printable (RFC 8264 9.11), except "@" (mailbox syntax)
        return "'@' is not allowed" if ch == "@" else None
    if cp < 0x80:
        return f"U+{cp:04X} (space or control) is not allowed"
    category = unicodedata.category(ch)
    if category not in _LETTER_DIGITS:
        if category in ("Lu", "Lt"):
            return f"U+{cp:04X} is a capital outside ASCII (case mapping would change it)"
        return f"U+{cp:04X} (category {category}) is not a letter or digit"
    if unicodedata.decomposition(ch).startswith("<"):
        return f"U+{cp:04X} has a compatibility decomposition (width mapping or NFKC)"
    if any(lo <= cp <= hi for lo, hi in _OLD_HANGUL_JAMO):
        return f"U+{cp:04X} is an old Hangul jamo"
    if cp in _EXCEPTIONS_DISALLOWED:
        return f"U+{cp:04X} is disallowed by RFC 8264 (exceptions)"
    if ch.lower() != ch:  # pragma: no cover - no such code point in the categories kept
        return f"U+{cp:04X} changes under case mapping"
    return None


def _bidi_problem(uid: str) -> str | None:
    """The Bidi Rule of RFC 5893 section 2 (required by RFC 8265 for strings with RTL)."""
    classes = [unicodedata.bidirectional(ch) for ch in uid]
    if not _RTL.intersection(classes):
        return None
    if classes[0] not in ("R", "AL"):
        return "a right-to-left user id must start with a right-to-left letter"
    allowed = {"R", "AL", "AN", "EN", "ES", "CS", "ET", "ON", "BN", "NSM"}
    if not set(classes) <= allowed:
        return "a right-to-left user id contains left-to-right characters"
    tail = [c for c in classes if c != "NSM"]
    if tail[-1] not in ("R", "AL", "EN", "AN"):
        return "a right-to-left user id must end with a right-to-left letter or a digit"
    if "EN" in classes and "AN" in classes:
        return "a right-to-left user id mixes European and Arabic-Indic digits"
    return None


def check_uid(uid: str) -> str | None:
    """None when ``uid`` satisfies the ``dance-uid`` comparison profile, else why not.

    The profile (docs/matching.md): 1 to 256 code points; each one ASCII printable except
    ``@``, or a non-ASCII code point of category Ll, Lo, Lm, Mn, Mc or Nd that has no
    compatibility decomposition, is not an old Hangul jamo and is its own lowercase; the whole
    string already in NFC; the Bidi Rule (RFC 5893) when it has right-to-left characters; no
    mixture of Arabic-Indic (U+0660..) and extended Arabic-Indic (U+06F0..) digits."""
    if not 0 < len(uid) <= MAX_USER_ID:
        return f"a user id has 1 to {MAX_USER_ID} characters"
    for ch in uid:
        problem = _code_point_problem(ch)
        if problem is not None:
            return problem
    if not unicodedata.is_normalized("NFC", uid):
        return "not in NFC (normalization would change it)"
    if any("\u0660" <= c <= "\u0669" for c in uid) and any("\u06f0" <= c <= "\u06f9" for c in uid):
        return "mixes Arabic-Indic and extended Arabic-Indic digits"
    return _bidi_problem(uid)


def uid_key(uid: str) -> str:
    """The compared form of a user id that passed :func:`check_uid`: ASCII A-Z lowered, every
    other code point unchanged."""
    return uid.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


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
            problem = "not a UTF8String" if value is None else check_uid(value)
            if problem is not None:
                invalid.append(f"{value!r}: {problem}")
                continue
            assert value is not None
            candidates.add(uid_key(value))
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
        problem = check_uid(local)
        if problem is not None:
            invalid.append(f"{local!r}: {problem}")
            continue
        candidates.add(uid_key(local))
    if invalid:
        return Rejection(Reason.BAD_USER_ID, f"user id refused by the profile: {invalid[0]}")
    if not candidates:
        return Rejection(Reason.NO_USER_ID, f"no uid otherName and no mailbox in {domain}")
    if len(candidates) > 1:
        return Rejection(
            Reason.AMBIGUOUS_USER_ID, f"{len(candidates)} different user ids in the certificate"
        )
    return f"{candidates.pop()}@{to_u_label_domain(domain)}"
