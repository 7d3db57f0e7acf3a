"""Trust anchors: built-in root KSKs and presentation-format files."""

from __future__ import annotations

from pathlib import Path

import dns.name
import pytest

from dance.dns import AnchorError, TrustAnchors


def test_builtin_root() -> None:
    anchors = TrustAnchors.builtin_root()
    root = anchors.closest(dns.name.from_text("sensor7._device.example.com."))
    assert root is not None
    assert root.zone == dns.name.root
    assert sorted(d.key_tag for d in root.ds) == [20326, 38696]
    assert all(d.algorithm == 8 and d.digest_type == 2 for d in root.ds)
    digests = {d.key_tag: d.digest.hex().upper() for d in root.ds}
    assert digests[20326] == "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
    assert digests[38696] == "683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16"
    assert not root.dnskeys


UNBOUND_STYLE = """\
; trust anchors for private zones
$TTL 3600
example.test. IN DS 12345 13 2 (
    0123456789ABCDEF0123456789ABCDEF
    0123456789ABCDEF0123456789ABCDEF ) ; a comment
$ORIGIN test.
other 60 IN DNSKEY 257 3 13 (
    mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpV
    XckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ== )
"""


def test_from_text_ds_dnskey_directives() -> None:
    anchors = TrustAnchors.from_text(UNBOUND_STYLE)
    assert len(anchors) == 2
    ex = anchors.closest(dns.name.from_text("a.b.example.test."))
    assert ex is not None and ex.zone == dns.name.from_text("example.test.")
    assert ex.ds[0].key_tag == 12345
    other = anchors.closest(dns.name.from_text("x.other.test."))
    assert other is not None and len(other.dnskeys) == 1
    assert anchors.closest(dns.name.from_text("example.org.")) is None
    merged = anchors.merged(TrustAnchors.builtin_root())
    assert merged.closest(dns.name.from_text("example.org.")) is not None
    assert merged.closest(dns.name.from_text("a.example.test.")) == ex
    # case-insensitive, the deepest anchor wins, the zone itself counts, a sibling does not
    assert anchors.closest(dns.name.from_text("A.B.EXAMPLE.Test.")) == ex
    assert anchors.closest(dns.name.from_text("example.test.")) == ex
    assert anchors.closest(dns.name.from_text("xexample.test.")) is None
    assert anchors.closest(dns.name.from_text("test.")) is None
    assert merged.closest(dns.name.from_text("xexample.test.")) is not None  # the root
    assert merged.closest(dns.name.from_text("xexample.test.")) != ex


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "anchors.txt"
    path.write_text(UNBOUND_STYLE)
    assert len(TrustAnchors.from_file(path)) == 2
    with pytest.raises(AnchorError):
        TrustAnchors.from_file(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "; only a comment\n",
        "example.test. IN A 192.0.2.1\n",
        "example.test. IN DS 1 13 2 zz\n",
        "example.test. CH DS 1 13 2 " + "00" * 32 + "\n",
        "$INCLUDE /etc/passwd\n",
        "example.test. IN DS 1 13\n",
    ],
)
def test_bad_anchor_text(text: str) -> None:
    with pytest.raises(AnchorError):
        TrustAnchors.from_text(text)
