"""The strict SDP checks (no aiortc needed): exactly one SHA-256 fingerprint, allowed hosts."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dance.webrtc.sdp import MAX_SDP_LENGTH, SdpError, SdpReason, read_sdp

FP = ":".join(["AB"] * 32)
CAND = "a=candidate:0123abcd 1 udp 2130706431 127.0.0.1 50000 typ host"


def sdp(*extra: str, fingerprints: tuple[str, ...] = (f"a=fingerprint:sha-256 {FP}",)) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "m=application 9 UDP/DTLS/SCTP x"]
    return "\r\n".join([*lines, CAND, *fingerprints, *extra]) + "\r\n"


def test_one_fingerprint_is_read() -> None:
    summary = read_sdp(sdp(), allowed_hosts=frozenset({"127.0.0.1"}))
    assert summary.fingerprint == bytes([0xAB] * 32)
    assert summary.candidates == ("127.0.0.1",)
    der = b"certificate"
    digest = hashlib.sha256(der).hexdigest().upper()
    text = sdp(
        fingerprints=(
            "a=fingerprint:sha-256 " + ":".join(digest[i : i + 2] for i in range(0, 64, 2)),
        )
    )
    assert read_sdp(text).matches(der) and not read_sdp(text).matches(b"other")


@pytest.mark.parametrize(
    ("fingerprints", "reason"),
    [
        ((), SdpReason.NO_FINGERPRINT),
        ((f"a=fingerprint:sha-256 {FP}",) * 2, SdpReason.SEVERAL_FINGERPRINTS),
        (
            (f"a=fingerprint:sha-256 {FP}", f"a=fingerprint:sha-512 {FP}"),
            SdpReason.SEVERAL_FINGERPRINTS,
        ),
        ((f"a=fingerprint:sha-1 {FP[:59]}",), SdpReason.BAD_FINGERPRINT),
        ((f"a=fingerprint:sha-256 {FP[:-3]}",), SdpReason.BAD_FINGERPRINT),
        ((f"a=fingerprint:sha-256 {FP} ",), SdpReason.BAD_FINGERPRINT),
        ((f"a=fingerprint:sha-256  {FP}",), SdpReason.BAD_FINGERPRINT),
        ((f"a=fingerprint:sha-256 {FP.replace(':', '')}",), SdpReason.BAD_FINGERPRINT),
    ],
)
def test_fingerprint_rules(fingerprints: tuple[str, ...], reason: SdpReason) -> None:
    with pytest.raises(SdpError) as info:
        read_sdp(sdp(fingerprints=fingerprints))
    assert info.value.reason is reason


def test_one_certificate_per_description_across_sections() -> None:
    other = ":".join(["CD"] * 32)
    # the same fingerprint at session level and in a media section (or in each bundled m=
    # section) names one certificate: accepted
    text = "v=0\r\n" + f"a=fingerprint:sha-256 {FP}\r\n" + sdp()[len("v=0\r\n") :]
    assert read_sdp(text).fingerprint == bytes([0xAB] * 32)
    two = sdp("m=audio 9 UDP/TLS/RTP/SAVPF 96", f"a=fingerprint:sha-256 {FP}")
    assert read_sdp(two).fingerprint == bytes([0xAB] * 32)
    # different certificates in different sections: refused
    for bad in (
        "v=0\r\n" + f"a=fingerprint:sha-256 {other}\r\n" + sdp()[len("v=0\r\n") :],
        sdp("m=audio 9 UDP/TLS/RTP/SAVPF 96", f"a=fingerprint:sha-256 {other}"),
    ):
        with pytest.raises(SdpError) as info:
            read_sdp(bad)
        assert info.value.reason is SdpReason.SEVERAL_FINGERPRINTS


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v=1\r\n",
        sdp().replace("s=-", "s=-\0"),
        sdp().replace("s=-", "s=\u00e9"),
        sdp().replace("s=-", "S=-"),
        sdp().replace("s=-", "garbage"),
        sdp().replace("s=-\r\n", "s=-\r"),
        "v=0\r\n" + "a=x\r\n" * (MAX_SDP_LENGTH // 5),
    ],
)
def test_malformed_descriptions_are_refused(text: str) -> None:
    with pytest.raises(SdpError) as info:
        read_sdp(text)
    assert info.value.reason is SdpReason.MALFORMED


def test_candidates_outside_the_allowed_hosts_are_refused() -> None:
    loopback = frozenset({"127.0.0.1"})
    other = CAND.replace("127.0.0.1", "192.0.2.7")
    with pytest.raises(SdpError) as info:
        read_sdp(sdp(other), allowed_hosts=loopback)
    assert info.value.reason is SdpReason.BAD_CANDIDATE
    assert read_sdp(sdp(other)).candidates == ("127.0.0.1", "192.0.2.7")
    with pytest.raises(SdpError) as info:
        read_sdp(sdp("a=candidate:bogus"), allowed_hosts=loopback)
    assert info.value.reason is SdpReason.BAD_CANDIDATE


@given(st.text(max_size=400))
def test_arbitrary_text_never_raises_anything_but_sdp_error(text: str) -> None:
    try:
        summary = read_sdp(text, allowed_hosts=frozenset({"127.0.0.1"}))
    except SdpError as exc:
        assert isinstance(exc.reason, SdpReason)
    else:
        assert len(summary.fingerprint) == 32


def test_the_package_imports_without_aiortc() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['aiortc'] = None\n"
        "import dance.webrtc as w\n"
        "assert w.read_sdp is not None\n"
        "try:\n    w.DancePeer\nexcept ImportError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"
