import datetime
import stat
from pathlib import Path

import pytest

from dance.credentials import CertificateChain
from dance.provision import IdentityError, new_identity
from dance.tlsa import make_record, verify

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_new_identity_key_0600_and_record_matches(tmp_path: Path) -> None:
    ident = new_identity("sensor7._device.example.com", tmp_path, now=NOW)
    assert stat.S_IMODE(ident.key_path.stat().st_mode) == 0o600
    chain = CertificateChain.from_certificates([ident.certificate])
    assert verify(ident.name, chain, [ident.record], now=NOW).accepted
    assert ident.zone_line().startswith("sensor7._device.example.com. 300 IN TLSA 3 1 1 ")


def test_record_of_other_identity_rejected(tmp_path: Path) -> None:
    a = new_identity("a._device.example.com", tmp_path, now=NOW)
    b = new_identity("b._device.example.com", tmp_path, now=NOW, key_type="ed25519")
    chain = CertificateChain.from_certificates([a.certificate])
    assert not verify(a.name, chain, [make_record(b.certificate)], now=NOW).accepted


def test_bad_name_is_typed_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        new_identity("not a name!", tmp_path, now=NOW)
