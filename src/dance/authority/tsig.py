"""TSIG keys (RFC 8945) for dynamic updates: read from files or the environment, never argv.

Two formats are accepted, so that the same file works with BIND, Knot (``knsupdate -k``) and
``dance publish``:

* the BIND/Knot ``tsig-keygen`` block (several per file, ``#``/``//`` comments allowed)::

      key "dance-update" {
          algorithm hmac-sha256;
          secret "base64...";
      };

* one key per line ``[ALGORITHM:]NAME:SECRET`` (the ``knsupdate -y`` form; the algorithm
  defaults to ``hmac-sha256``). An environment variable holds one such line.

Only HMAC-SHA256/384/512 are accepted, with secrets of at least 16 bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.tsig

from dance.authority.errors import AuthorityError

__all__ = [
    "ALLOWED_ALGORITHMS",
    "TsigKey",
    "generate_tsig_key",
    "keyring",
    "load_tsig_keys",
    "parse_tsig_keys",
    "tsig_key_from_env",
    "write_tsig_key",
]

#: Accepted TSIG algorithms (presentation name -> dnspython name).
ALLOWED_ALGORITHMS: Mapping[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}
_MIN_SECRET = 16
_BLOCK = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.DOTALL | re.IGNORECASE)
_ALGO = re.compile(r"algorithm\s+\"?([A-Za-z0-9.-]+)\"?\s*;", re.IGNORECASE)
_SECRET = re.compile(r'secret\s+"([^"]*)"\s*;', re.IGNORECASE)


@dataclass(frozen=True)
class TsigKey:
    """One TSIG key. The secret is never part of ``repr``."""

    name: dns.name.Name
    algorithm: str
    secret: bytes = field(repr=False)

    def to_dnspython(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.name, self.secret, ALLOWED_ALGORITHMS[self.algorithm])

    def to_line(self) -> str:
        """The key as one ``ALGORITHM:NAME:SECRET`` line (``knsupdate -k``/``kdig -k`` file)."""
        b64 = base64.b64encode(self.secret).decode("ascii")
        return f"{self.algorithm}:{self.name.to_text(omit_final_dot=True)}:{b64}\n"

    def to_bind(self) -> str:
        """The key as a BIND/Knot ``key`` block."""
        b64 = base64.b64encode(self.secret).decode("ascii")
        name = self.name.to_text(omit_final_dot=True)
        return f'key "{name}" {{\n\talgorithm {self.algorithm};\n\tsecret "{b64}";\n}};\n'


def _make(name: str, algorithm: str, secret_b64: str, where: str) -> TsigKey:
    algo = algorithm.lower().rstrip(".")
    if algo not in ALLOWED_ALGORITHMS:
        allowed = ", ".join(ALLOWED_ALGORITHMS)
        raise AuthorityError("key-file", f"{where}: TSIG algorithm {algorithm!r} not in {allowed}")
    try:
        secret = base64.b64decode(secret_b64.strip(), validate=True)
        key_name = dns.name.from_text(name)
    except (binascii.Error, ValueError, dns.exception.DNSException) as exc:
        raise AuthorityError("key-file", f"{where}: bad TSIG key {name!r}: {exc}") from None
    if len(secret) < _MIN_SECRET:
        raise AuthorityError(
            "key-file", f"{where}: TSIG secret of {name!r} shorter than {_MIN_SECRET} bytes"
        )
    return TsigKey(key_name, algo, secret)


def _line_key(line: str, where: str) -> TsigKey:
    parts = line.strip().split(":")
    if len(parts) == 2:
        return _make(parts[0], "hmac-sha256", parts[1], where)
    if len(parts) == 3:
        return _make(parts[1], parts[0], parts[2], where)
    raise AuthorityError("key-file", f"{where}: expected [ALGORITHM:]NAME:SECRET")


def _strip_comments(text: str) -> str:
    out = []
    for line in text.splitlines():
        stripped = line.split("#", 1)[0]
        stripped = stripped.split("//", 1)[0]
        out.append(stripped)
    return "\n".join(out)


def parse_tsig_keys(text: str, source: str = "<tsig>") -> list[TsigKey]:
    """Parse BIND-style ``key`` blocks or ``[ALGORITHM:]NAME:SECRET`` lines."""
    body = _strip_comments(text)
    keys: list[TsigKey] = []
    if re.search(r"\bkey\b", body, re.IGNORECASE) and "{" in body:
        for match in _BLOCK.finditer(body):
            line = body.count("\n", 0, match.start()) + 1
            where = f"{source}:{line}"
            algo = _ALGO.search(match.group(2))
            secret = _SECRET.search(match.group(2))
            if algo is None or secret is None:
                raise AuthorityError("key-file", f"{where}: key block needs algorithm and secret")
            keys.append(_make(match.group(1), algo.group(1), secret.group(1), where))
        rest = _BLOCK.sub("", body).strip()
        if rest:
            line = body.count("\n", 0, body.find(rest[:1])) + 1
            raise AuthorityError("key-file", f"{source}:{line}: cannot parse {rest[:30]!r}")
    else:
        for number, entry in enumerate(body.splitlines(), 1):
            if entry.strip():
                keys.append(_line_key(entry, f"{source}:{number}"))
    if not keys:
        raise AuthorityError("key-file", f"{source}: no TSIG key found")
    return keys


def load_tsig_keys(path: str | Path) -> list[TsigKey]:
    """Read TSIG keys from a file (see the module docstring for the formats)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthorityError("key-file", f"cannot read TSIG key file {path}: {exc}") from None
    return parse_tsig_keys(text, str(path))


def tsig_key_from_env(variable: str) -> TsigKey:
    """The TSIG key held by environment variable ``variable`` (``[ALGORITHM:]NAME:SECRET``)."""
    value = os.environ.get(variable)
    if not value:
        raise AuthorityError("key-file", f"environment variable {variable} is not set")
    return _line_key(value, f"${variable}")


def keyring(keys: Iterable[TsigKey]) -> dict[dns.name.Name, dns.tsig.Key]:
    """A dnspython keyring (name -> key)."""
    return {key.name: key.to_dnspython() for key in keys}


def generate_tsig_key(name: str, algorithm: str = "hmac-sha256") -> TsigKey:
    """A fresh random key (32 bytes for SHA-256, 48/64 for SHA-384/512)."""
    size = {"hmac-sha256": 32, "hmac-sha384": 48, "hmac-sha512": 64}.get(algorithm, 32)
    return _make(name, algorithm, base64.b64encode(secrets.token_bytes(size)).decode(), name)


def write_tsig_key(path: str | Path, key: TsigKey, *, style: str = "bind") -> None:
    """Write ``key`` to a new file readable by its owner only (0600): a BIND ``key`` block
    (``style="bind"``, for BIND and Knot configuration, ``nsupdate -k``) or one
    ``ALGORITHM:NAME:SECRET`` line (``style="line"``, for ``knsupdate -k`` and ``kdig -k``)."""
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(key.to_line() if style == "line" else key.to_bind())
