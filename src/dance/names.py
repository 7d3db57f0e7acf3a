"""DANCE client names: parsing, canonical form, formats and owner-name helpers.

A ClientName is the full owner name of a client's TLSA record (draft-ietf-dance-client-auth-13
section 2): RFC 1035 presentation form without the trailing dot, ASCII only, A-labels for
internationalized labels. The parser is deliberately strict, because servers run it on untrusted
input before anything else (before the allow-list, before DNS):

* ASCII only; no escapes (``\\``), no wildcard (``*``), no empty labels, no trailing dot;
* every label matches ``[A-Za-z0-9_-]{1,63}``;
* labels starting with ``xn--`` must be valid IDNA2008 A-labels (checked with the ``idna`` package,
  not Python's IDNA2003 codec);
* the DNS wire form is at most 255 octets;
* comparison is case-insensitive; the canonical form is lowercase.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

import dns.name
import idna

__all__ = [
    "ClientName",
    "InvalidName",
    "NameFormat",
    "hashed_label",
    "hashed_owner_name",
    "parse_client_name",
    "to_a_label_domain",
    "to_u_label_domain",
    "tree_device_name",
    "tree_shard_zone",
]

MAX_WIRE_LENGTH = 255
MAX_LABEL_LENGTH = 63
_LABEL_RE = re.compile(r"[A-Za-z0-9_-]{1,63}\Z")


class NameFormat(enum.Enum):
    """The naming formats of draft-ietf-dance-client-auth section 2 and the architecture."""

    SERVICE = "service"  # _service.client-domain, e.g. _smtp-client.device1.example.com
    DEVICE = "device"  # devicename._device.org-domain, e.g. sensor7._device.example.com
    USER = "user"  # _user.domain: the domain's user CA (architecture, Example 3)
    FREEFORM = "freeform"  # client-domain, e.g. device73.example.com


class InvalidName(ValueError):
    """A client name failed the strict syntax rules.

    ``reason`` is a stable machine-readable code; ``label`` names the offending label, if any.
    """

    def __init__(self, reason: str, message: str, label: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.label = label


@dataclass(frozen=True, slots=True)
class ClientName:
    """A syntactically valid, canonical (lowercase) DANCE client name."""

    text: str
    labels: tuple[str, ...] = field(repr=False)
    format: NameFormat = field(repr=False)

    def __str__(self) -> str:
        return self.text

    def to_wire(self) -> bytes:
        """The uncompressed DNS wire form, ending in the root label."""
        out = bytearray()
        for label in self.labels:
            out.append(len(label))
            out += label.encode("ascii")
        out.append(0)
        return bytes(out)

    def to_dns(self) -> dns.name.Name:
        """The absolute dnspython name (the TLSA QNAME, verbatim)."""
        return dns.name.Name([label.encode("ascii") for label in self.labels] + [b""])

    @property
    def user_domain(self) -> str | None:
        """For ``_user.D`` names, the domain D (A-labels, lowercase); otherwise None."""
        if self.format is NameFormat.USER:
            return ".".join(self.labels[1:])
        return None

    @property
    def device_org(self) -> str | None:
        """For ``host._device.org`` names, the organization domain; otherwise None."""
        if self.format is NameFormat.DEVICE:
            index = self.labels.index("_device")
            return ".".join(self.labels[index + 1 :])
        return None

    def is_subdomain_of(self, suffix: str) -> bool:
        """True if this name equals ``suffix`` or lies below it (label-wise, case-insensitive)."""
        parts = tuple(p for p in suffix.lower().rstrip(".").split(".") if p)
        if not parts:
            return True
        return self.labels[-len(parts) :] == parts if len(parts) <= len(self.labels) else False

    def unicode(self) -> str:
        """A display form with U-labels where labels are IDNA A-labels (never for matching)."""
        return ".".join(_label_to_unicode(label) for label in self.labels)


def _label_to_unicode(label: str) -> str:
    if label.startswith("xn--"):
        try:
            return str(idna.decode(label))
        except idna.IDNAError:
            return label
    return label


def _check_a_label(label: str) -> None:
    try:
        ulabel = idna.decode(label)
        if idna.encode(ulabel).decode("ascii") != label:
            raise idna.IDNAError("not the canonical A-label")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise InvalidName(
            "bad-idna", f"label {label!r} is not a valid IDNA2008 A-label ({exc})", label
        ) from None


def _classify(labels: tuple[str, ...]) -> NameFormat:
    if labels[0] == "_user" and len(labels) >= 2:
        return NameFormat.USER
    if len(labels) >= 3 and "_device" in labels[1:-1]:
        return NameFormat.DEVICE
    if labels[0].startswith("_") and len(labels) >= 2:
        return NameFormat.SERVICE
    return NameFormat.FREEFORM


def parse_client_name(value: str | bytes | ClientName) -> ClientName:
    """Parse and canonicalize a client name, or raise :class:`InvalidName`.

    Accepts ``str`` or ASCII ``bytes`` (as carried in the ``dane_clientid`` extension).
    """
    if isinstance(value, ClientName):
        return value
    if isinstance(value, str) and len(value) <= 300:
        return _parse_cached(value)
    return _parse(value)


@functools.lru_cache(maxsize=4096)
def _parse_cached(value: str) -> ClientName:
    return _parse(value)


def _parse(value: str | bytes) -> ClientName:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if not raw.isascii():
            raise InvalidName("non-ascii", "client name must be ASCII (use A-labels)")
        text = raw.decode("ascii")
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidName("malformed", f"client name must be text, not {type(value).__name__}")
    if not text:
        raise InvalidName("empty", "client name is empty")
    if not text.isascii():
        raise InvalidName("non-ascii", "client name must be ASCII: use A-labels (xn--...)")
    if "\\" in text:
        raise InvalidName("escape", "escapes are not allowed in client names")
    if text.endswith("."):
        raise InvalidName("trailing-dot", "client name must not end with a dot")
    if text.startswith("."):
        raise InvalidName("empty-label", "client name must not start with a dot")
    lowered = text.lower()
    labels = tuple(lowered.split("."))
    wire_length = 1
    for label in labels:
        if not label:
            raise InvalidName("empty-label", f"empty label in {text!r}")
        if label == "*" or "*" in label:
            raise InvalidName("wildcard", f"label {label!r}: wildcards are not client names", label)
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidName(
                "label-too-long", f"label {label[:20]!r}... is longer than 63 octets", label
            )
        if not _LABEL_RE.match(label):
            raise InvalidName(
                "bad-label",
                f"label {label!r} may only contain letters, digits, '-' and '_'",
                label,
            )
        if label.startswith("xn--"):
            _check_a_label(label)
        wire_length += len(label) + 1
    if wire_length > MAX_WIRE_LENGTH:
        raise InvalidName("too-long", f"client name is {wire_length} octets on the wire (max 255)")
    return ClientName(lowered, labels, _classify(labels))


def to_a_label_domain(domain: str) -> str:
    """Convert a domain in U-label or A-label form to lowercase A-labels (IDNA2008, UTS 46)."""
    domain = domain.rstrip(".")
    if domain.isascii():
        # Validate any A-labels, keep the rest (underscore labels are not IDNA's business).
        return ".".join(
            label if not label.startswith("xn--") else idna.encode(idna.decode(label)).decode()
            for label in domain.lower().split(".")
        )
    return str(idna.encode(domain, uts46=True).decode("ascii")).lower()


def to_u_label_domain(domain: str) -> str:
    """The lowercase UTF-8 (U-label) form of an A-label domain, for display and user ids."""
    return ".".join(_label_to_unicode(label) for label in domain.lower().rstrip(".").split("."))


# --- privacy-preserving owner names (RFC 7929 style) -------------------------------------------


def hashed_label(local_part: str) -> str:
    """RFC 7929 section 3 label: hex of the first 28 octets of SHA-256 of the NFC local part.

    No case folding is applied (``Hugh`` and ``hugh`` differ), as in RFC 7929.
    """
    normalized = unicodedata.normalize("NFC", local_part)
    return hashlib.sha256(normalized.encode("utf-8")).digest()[:28].hex()


def hashed_owner_name(address: str, *, under: str = "_openpgpkey") -> ClientName:
    """Owner name for ``local@domain`` that does not reveal the local part in DNS.

    ``hashed_owner_name("hugh@example.com")`` gives RFC 7929's
    ``c93f1e40...._openpgpkey.example.com``. With ``under="_user"`` the result is a per-user
    name below the domain's ``_user`` label: a local, non-standard convention (see docs/names.md);
    note that zone walking still reveals how many users exist, and hashes of common local parts
    can be guessed.
    """
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise InvalidName("malformed", f"not a mail address: {address!r}")
    if under and not re.fullmatch(r"_?[a-z0-9-]{1,62}", under):
        raise InvalidName("bad-label", f"bad label {under!r}", under)
    try:
        domain_a = to_a_label_domain(domain)
    except idna.IDNAError as exc:
        raise InvalidName("bad-idna", f"domain {domain!r} is not valid IDNA2008 ({exc})") from None
    parts = [hashed_label(local)]
    if under:
        parts.append(under)
    parts.append(domain_a)
    return parse_client_name(".".join(parts))


# --- tree-structured device names (architecture 6.5.1) ------------------------------------------


def _shard_labels(device: str, depth: int, width: int) -> list[str]:
    if not 1 <= depth <= 8:
        raise ValueError("depth must be between 1 and 8")
    if not 1 <= width <= 4:
        raise ValueError("width must be between 1 and 4 hex digits per level")
    digest = hashlib.sha256(device.lower().encode("ascii")).hexdigest()
    # Like ENUM (RFC 6116): the most significant shard is nearest the apex, so it is the
    # right-most of the shard labels.
    shards = [digest[i * width : (i + 1) * width] for i in range(depth)]
    return list(reversed(shards))


def tree_device_name(
    device: str, org_domain: str, *, depth: int = 2, width: int = 1, label: str = "_device"
) -> ClientName:
    """A tree-structured device name that keeps each zone small at fleet scale.

    ``tree_device_name("sensor7", "example.com")`` gives ``sensor7.<h2>.<h1>._device.example.com``
    where ``h1 h2`` are the first hex digits of SHA-256(device): 16**(depth*width) shards, each of
    which can be its own delegated, independently signed zone (seed section 6.5.1). The mapping is
    stable, so any party can compute it from the device label alone.
    """
    head = parse_client_name(device)
    if len(head.labels) != 1:
        raise InvalidName("bad-label", f"device label must be a single label: {device!r}")
    org = parse_client_name(org_domain)
    labels = [head.text, *_shard_labels(head.text, depth, width), label, org.text]
    return parse_client_name(".".join(labels))


def tree_shard_zone(
    device: str, org_domain: str, *, depth: int = 2, width: int = 1, label: str = "_device"
) -> str:
    """The shard zone (the parent of the device name) that holds ``device``'s TLSA record."""
    name = tree_device_name(device, org_domain, depth=depth, width=width, label=label)
    return ".".join(name.labels[1:])
