"""TSIG key files: a secret whose base64 holds ``//`` (about one key in a hundred) is not cut as a
comment; comments outside quotes still are. CI hit this: a restarted `dance authority` could not
read the key file it had used before."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dance.tsig import TSIGKey, load_tsig_keys, parse_tsig_keys, write_tsig_key

SLASHES = base64.b64decode("ab//cd//ef+/" + "A" * 32)  # "//" and "+/" in the base64 text


@pytest.mark.parametrize("style", ["bind", "line"])
def test_secret_with_slashes_round_trips(tmp_path: Path, style: str) -> None:
    key = TSIGKey("update-key", "hmac-sha256", SLASHES)
    assert "//" in base64.b64encode(key.secret).decode()
    path = tmp_path / "k.key"
    write_tsig_key(path, key, style=style)
    assert load_tsig_keys(path) == [key]


def test_comments_outside_quotes_are_still_comments() -> None:
    secret = base64.b64encode(SLASHES).decode()
    text = (
        f'// a comment\nkey "k1" {{ algorithm hmac-sha256; secret "{secret}"; }}; # trailing\n'
        f'# key "k2" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
    )
    keys = parse_tsig_keys(text)
    assert [k.name for k in keys] == ["k1"] and keys[0].secret == SLASHES
