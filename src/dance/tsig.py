"""TSIG keys for RFC 2136 updates, read from a file or the environment (never from argv).

Accepted forms (the same files work with BIND ``nsupdate -k``, Knot ``knsupdate -k`` and dance):

* the ``tsig-keygen`` / ``keymgr -t`` block (several per file; ``#`` and ``//`` comments)::

      key "dance-update" {
          algorithm hmac-sha256;
          secret "base64...";
      };

* one line ``NAME:ALGORITHM:SECRET``, ``ALGORITHM:NAME:SECRET`` (the ``knsupdate -y`` form) or
  ``NAME:SECRET`` (HMAC-SHA256). The environment variable ``DANCE_TSIG_KEY`` holds one such line.

Only HMAC-SHA256/384/512 are accepted, with secrets of at least 16 bytes. The secret never
appears in ``repr`` or in error messages.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.tsig

__all__ = [
    "ALGORITHMS",
    "ENV_VAR",
    "TSIGError",
    "TSIGKey",
    "generate_tsig_key",
    "keyring",
    "load_tsig_key",
    "load_tsig_keys",
    "parse_tsig_keys",
    "parse_tsig_text",
    "tsig_key_from_env",
    "write_tsig_key",
]

log = logging.getLogger(__name__)

ENV_VAR = "DANCE_TSIG_KEY"
ALGORITHMS: Mapping[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}
_MIN_SECRET = 16
_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.DOTALL | re.IGNORECASE)
_ALGO = re.compile(r'algorithm\s+"?([A-Za-z0-9.-]+)"?\s*;', re.IGNORECASE)
_SECRET = re.compile(r'secret\s+"([^"]*)"\s*;', re.IGNORECASE)
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,253}\Z")


class TSIGError(ValueError):
    """A TSIG key could not be read. ``reason`` is a stable code; ``line`` a 1-based line."""

    def __init__(self, reason: str, message: str, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.reason = reason
        self.line = line


@dataclass(frozen=True)
class TSIGKey:
    name: str  # without trailing dot, lowercase
    algorithm: str  # e.g. "hmac-sha256"
    secret: bytes = field(repr=False)

    def to_dnspython(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name + ".", self.secret, ALGORITHMS[self.algorithm])

    @property
    def dns_name(self) -> dns.name.Name:
        return dns.name.from_text(self.name + ".")

    def secret_b64(self) -> str:
        return base64.b64encode(self.secret).decode("ascii")

    def to_line(self) -> str:
        """The key as one ``ALGORITHM:NAME:SECRET`` line (``knsupdate -k``/``kdig -k`` file)."""
        return f"{self.algorithm}:{self.name}:{self.secret_b64()}\n"

    def to_bind(self) -> str:
        """The key as a BIND/Knot ``key`` block."""
        return (
            f'key "{self.name}" {{\n\talgorithm {self.algorithm};\n'
            f'\tsecret "{self.secret_b64()}";\n}};\n'
        )


def _make(name: str, algorithm: str, secret_b64: str, line: int | None) -> TSIGKey:
    name = name.strip().rstrip(".").lower()
    algorithm = algorithm.strip().lower().rstrip(".")
    if algorithm.endswith(".sig-alg.reg.int"):
        algorithm = algorithm.removesuffix(".sig-alg.reg.int")
    if not _NAME_RE.match(name):
        raise TSIGError("bad-key-name", "TSIG key name is not a valid domain name", line)
    if algorithm not in ALGORITHMS:
        raise TSIGError(
            "bad-algorithm",
            f"TSIG algorithm {algorithm!r} not accepted (use {', '.join(ALGORITHMS)})",
            line,
        )
    try:
        secret = base64.b64decode(secret_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TSIGError("bad-secret", "TSIG secret is not valid base64", line) from None
    if len(secret) < _MIN_SECRET:
        raise TSIGError(
            "weak-secret", f"TSIG secret is {len(secret)} bytes (at least {_MIN_SECRET})", line
        )
    return TSIGKey(name, algorithm, secret)


def _strip_comments(text: str) -> str:
    """Remove ``#`` and ``//`` comments, but not inside a quoted string: a base64 secret may
    contain ``//`` (about one key in a hundred)."""
    out = []
    for raw in text.splitlines():
        quoted = False
        end = len(raw)
        for i, char in enumerate(raw):
            if char == '"':
                quoted = not quoted
            elif not quoted and (char == "#" or raw.startswith("//", i)):
                end = i
                break
        out.append(raw[:end])
    return "\n".join(out)


def _parse_line(text: str, line: int | None) -> TSIGKey:
    parts = text.strip().split(":")
    if len(parts) == 2:
        return _make(parts[0], "hmac-sha256", parts[1], line)
    if len(parts) == 3:
        a, b, secret = parts
        if a.strip().lower() in ALGORITHMS:
            return _make(b, a, secret, line)
        return _make(a, b, secret, line)
    raise TSIGError("malformed", "expected NAME:ALGORITHM:SECRET or a key { ... }; block", line)


def parse_tsig_keys(text: str) -> list[TSIGKey]:
    """Every key in a key file's text (``key`` blocks or one-line keys)."""
    clean = _strip_comments(text)
    keys: list[TSIGKey] = []
    if _BLOCK.search(clean) or re.search(r"\bkey\s", clean):
        for match in _BLOCK.finditer(clean):
            line = clean.count("\n", 0, match.start()) + 1
            algo = _ALGO.search(match.group(2))
            secret = _SECRET.search(match.group(2))
            if not algo or not secret:
                raise TSIGError(
                    "malformed", "key block needs 'algorithm ...;' and 'secret \"...\";'", line
                )
            keys.append(_make(match.group(1), algo.group(1), secret.group(1), line))
        if not keys:
            raise TSIGError("malformed", "no complete key { ... }; block found")
    else:  # ALGORITHM:NAME:SECRET lines: only "#" starts a comment ("//" is valid base64)
        for number, raw in enumerate(text.splitlines(), 1):
            entry = raw.split("#", 1)[0]
            if entry.strip():
                keys.append(_parse_line(entry, number))
    if not keys:
        raise TSIGError("empty", "no TSIG key found")
    return keys


def parse_tsig_text(text: str, name: str | None = None) -> TSIGKey:
    """Parse a key file's text; with several keys, ``name`` selects one (default: the first)."""
    keys = parse_tsig_keys(text)
    if name is None:
        return keys[0]
    wanted = name.rstrip(".").lower()
    for key in keys:
        if key.name == wanted:
            return key
    raise TSIGError("unknown-key", f"no key named {wanted!r} in the key file")


def _read_key_file(path: str | Path) -> str:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        mode = stat.S_IMODE(p.stat().st_mode)
    except (OSError, UnicodeDecodeError) as exc:
        raise TSIGError("unreadable", f"cannot read TSIG key file {p}: {exc}") from None
    if mode & 0o077:
        log.warning("TSIG key file %s is readable by others (mode %o)", p, mode)
    return text


def load_tsig_keys(path: str | Path) -> list[TSIGKey]:
    """Every key in the file ``path`` (a server may accept several)."""
    return parse_tsig_keys(_read_key_file(path))


def tsig_key_from_env(variable: str = ENV_VAR, environ: Mapping[str, str] | None = None) -> TSIGKey:
    """The key held by environment variable ``variable`` (one line or one ``key`` block)."""
    value = (os.environ if environ is None else environ).get(variable)
    if not value:
        raise TSIGError("missing", f"environment variable {variable} is not set")
    return parse_tsig_text(value)


def keyring(keys: Iterable[TSIGKey]) -> dict[dns.name.Name, dns.tsig.Key]:
    """A dnspython keyring (name -> key)."""
    return {key.dns_name: key.to_dnspython() for key in keys}


def generate_tsig_key(name: str, algorithm: str = "hmac-sha256") -> TSIGKey:
    """A fresh random key (32 bytes for SHA-256, 48/64 for SHA-384/512)."""
    size = {"hmac-sha256": 32, "hmac-sha384": 48, "hmac-sha512": 64}.get(algorithm, 32)
    return _make(name, algorithm, base64.b64encode(secrets.token_bytes(size)).decode(), None)


def write_tsig_key(path: str | Path, key: TSIGKey, *, style: str = "bind") -> None:
    """Write ``key`` to a new file readable by its owner only (0600): a BIND ``key`` block
    (``style="bind"``, for BIND and Knot configuration, ``nsupdate -k``) or one
    ``ALGORITHM:NAME:SECRET`` line (``style="line"``, for ``knsupdate -k`` and ``kdig -k``)."""
    fd = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key.to_line() if style == "line" else key.to_bind())


def load_tsig_key(
    path: str | Path | None = None,
    *,
    name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> TSIGKey:
    """The key from ``path`` if given, else from ``$DANCE_TSIG_KEY``; raise TSIGError if none."""
    if path is not None:
        return parse_tsig_text(_read_key_file(path), name)
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR)
    if value:
        return parse_tsig_text(value, name)
    raise TSIGError("missing", f"no TSIG key: give --tsig-key-file FILE or set ${ENV_VAR}")
