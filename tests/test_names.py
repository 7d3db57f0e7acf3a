"""dance.names: strict ClientName parsing (dance-specs 1.4, 8.1 TC-P*, 8.7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dance.names import (
    ClientName,
    InvalidName,
    NameFormat,
    hashed_label,
    hashed_owner_name,
    parse_client_name,
    tree_device_name,
    tree_shard_zone,
)


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        (
            "sensor7._device.example.com",
            "0773656e736f7237075f646576696365076578616d706c6503636f6d00",
        ),
        (
            "_smtp-client.device1.example.com",
            "0c5f736d74702d636c69656e740764657669636531076578616d706c6503636f6d00",
        ),
        ("device73.example.com", "086465766963653733076578616d706c6503636f6d00"),
        ("_user.example.com", "055f75736572076578616d706c6503636f6d00"),
    ],
)
def test_wire_vectors(text: str, wire: str) -> None:
    name = parse_client_name(text)
    assert name.to_wire().hex() == wire
    assert name.to_dns().to_wire() == bytes.fromhex(wire)
    assert parse_client_name(text.encode()).text == text


def test_formats() -> None:
    assert parse_client_name("_smtp-client.device1.example.com").format is NameFormat.SERVICE
    assert parse_client_name("sensor7._device.example.com").format is NameFormat.DEVICE
    assert parse_client_name("device73.example.com").format is NameFormat.FREEFORM
    user = parse_client_name("_user.example.com")
    assert user.format is NameFormat.USER and user.user_domain == "example.com"
    assert parse_client_name("sensor7._device.example.com").device_org == "example.com"
    assert parse_client_name("sensor7.3.a._device.example.com").format is NameFormat.DEVICE


def test_tc_p5_canonical_lowercase() -> None:
    name = parse_client_name("Sensor7._DEVICE.Example.COM")
    assert name.text == "sensor7._device.example.com"
    assert name == parse_client_name("sensor7._device.example.com")


@pytest.mark.parametrize(
    ("text", "reason", "label"),
    [
        ("sensor7._device.example.com.", "trailing-dot", None),  # TC-P6
        ("*._device.example.com", "wildcard", "*"),  # TC-P7
        ("bücher.example", "non-ascii", None),  # TC-P8
        ("a\\046b.example", "escape", None),  # TC-P10
        ("a" * 64 + ".example", "label-too-long", "a" * 64),  # TC-P11
        ("xn--zz.example", "bad-idna", "xn--zz"),  # TC-P13
        ("", "empty", None),
        (".example.com", "empty-label", None),
        ("a..example", "empty-label", None),
        ("a b.example", "bad-label", "a b"),
        ("host@example.com", "bad-label", "host@example"),
        ("xn--bcher-kva.xn--", "bad-idna", "xn--"),
    ],
)
def test_rejections(text: str, reason: str, label: str | None) -> None:
    with pytest.raises(InvalidName) as info:
        parse_client_name(text)
    assert info.value.reason == reason
    assert info.value.label == label
    if label:
        assert label[:20] in str(info.value)


def test_tc_p9_a_label_accepted() -> None:
    name = parse_client_name("xn--bcher-kva.example")
    assert name.text == "xn--bcher-kva.example"
    assert name.unicode() == "bücher.example"


def test_tc_p12_wire_length() -> None:
    # 4 labels of 63 + 1 of 1: 4*64 + 2 + 1 = 259 > 255
    too_long = ".".join(["a" * 63] * 3 + ["b" * 61])  # 3*64 + 62 + 1 = 255: fits
    assert len(parse_client_name(too_long).to_wire()) == 255
    with pytest.raises(InvalidName) as info:
        parse_client_name(too_long + "c")
    assert info.value.reason == "too-long"


def test_bytes_non_ascii() -> None:
    with pytest.raises(InvalidName):
        parse_client_name("bücher.example".encode())


def test_subdomain() -> None:
    name = parse_client_name("sensor7._device.example.com")
    assert name.is_subdomain_of("example.com")
    assert name.is_subdomain_of("_device.EXAMPLE.com.")
    assert not name.is_subdomain_of("ample.com")
    assert not name.is_subdomain_of("x.sensor7._device.example.com")


def test_rfc7929_vectors() -> None:
    assert (
        hashed_owner_name("hugh@example.com").text
        == "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.com"
    )
    assert hashed_label("Hugh") == "7063a398942ba5c6125429518d0608563f3974bb48013ddf58fb01d4"
    assert hashed_label("alice") == "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db"
    # NFC: a decomposed and a composed local part give the same label.
    assert hashed_label("jose\u0301") == hashed_label("jos\u00e9")
    assert hashed_owner_name("alice@bücher.example", under="_user").text.endswith(
        "._user.xn--bcher-kva.example"
    )
    with pytest.raises(InvalidName):
        hashed_owner_name("no-at-sign")


def test_tree_device_names() -> None:
    name = tree_device_name("sensor7", "example.com")
    assert name.labels[0] == "sensor7" and name.labels[3:] == ("_device", "example", "com")
    assert all(len(label) == 1 for label in name.labels[1:3])
    assert name.format is NameFormat.DEVICE
    # Stable and case-insensitive.
    assert tree_device_name("SENSOR7", "Example.com") == name
    assert tree_shard_zone("sensor7", "example.com") == ".".join(name.labels[1:])
    # Spread: 1,000 devices over 256 shards, none holds more than a few percent.
    shards: dict[str, int] = {}
    for i in range(1000):
        zone = tree_shard_zone(f"dev{i}", "example.com")
        shards[zone] = shards.get(zone, 0) + 1
    assert len(shards) > 200 and max(shards.values()) < 20
    with pytest.raises(InvalidName):
        tree_device_name("a.b", "example.com")


LABEL = st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True).filter(
    lambda s: not s.startswith("xn--")
)


@given(st.lists(LABEL, min_size=1, max_size=8))
def test_roundtrip_valid(labels: list[str]) -> None:
    text = ".".join(labels)
    name = parse_client_name(text)
    assert name.text == text.lower()
    assert parse_client_name(name.text) == name
    assert isinstance(name, ClientName)
    assert name.to_dns().to_text(omit_final_dot=True) == name.text


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_fuzz_never_crashes(value: str | bytes) -> None:
    try:
        name = parse_client_name(value)
    except InvalidName as exc:
        assert exc.reason
    else:
        assert name.text.isascii() and len(name.to_wire()) <= 255
        assert "*" not in name.text and "\\" not in name.text
