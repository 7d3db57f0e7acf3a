"""Two aiortc peers on loopback set up a DTLS-SRTP data channel; each authenticates the other's
DTLS certificate (SDP fingerprint and the certificate presented in the handshake) by its TLSA
records, before any data flows."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiortc.mediastreams import AudioStreamTrack
from cryptography.hazmat.primitives import serialization

from dance import certs
from dance.auth import Authenticator
from dance.identity import Identity
from dance.testkit import Fault
from dance.webrtc import DancePeer, PeerRefused, SdpReason, WebRTCReason
from tests.webrtc.common import ALICE, ALICE_HASHED, ALLOW, BOB, World, resolver

pytestmark = pytest.mark.integration


@dataclass
class Run:
    alice: DancePeer
    bob: DancePeer
    alice_result: Identity | BaseException
    bob_result: Identity | BaseException
    bob_got: list[Any]
    alice_got: list[Any]


def run_pair(
    world: World,
    *,
    alice_key: Any = None,
    alice_name: str = ALICE,
    bob_key: Any = None,
    bob_allow: list[str] | None = None,
    bob_auth_timeout: float = 10.0,
    audio: bool = False,
    alice_cert: Any = None,
    edit_offer: Callable[[str], str] | None = None,
    edit_answer: Callable[[str], str] | None = None,
) -> Run:
    async def main() -> Run:
        async with resolver(world) as ra, resolver(world) as rb:
            alice = DancePeer(
                alice_name,
                alice_key or world.alice,
                Authenticator(ra, allow=ALLOW),
                peer_name=BOB,
                certificate=alice_cert,
                tracks=[AudioStreamTrack()] if audio else (),
            )
            bob = DancePeer(
                BOB,
                bob_key or world.bob,
                Authenticator(rb, allow=bob_allow if bob_allow is not None else ALLOW),
                peer_name=alice_name,
                auth_timeout=bob_auth_timeout,
            )
            try:
                offer = await alice.offer()
                if edit_offer:
                    offer = edit_offer(offer)
                answer = await bob.answer(offer)
                if edit_answer:
                    answer = edit_answer(answer)
                await alice.accept(answer)
                ta = asyncio.ensure_future(alice.connected(30))
                tb = asyncio.ensure_future(bob.connected(30))
                await asyncio.wait({ta, tb}, return_when=asyncio.FIRST_EXCEPTION)
                if ta.done() and tb.done() and not ta.exception() and not tb.exception():
                    alice.send(b"hello from alice")
                    bob.send("hello from bob")
                    bob_got = [await bob.receive(10)]
                    alice_got = [await alice.receive(10)]
                    if audio:
                        frame = await asyncio.wait_for(bob.remote_tracks[0].recv(), 10)
                        bob_got.append(("audio", frame.sample_rate, frame.samples))
                else:
                    # one side refused: give the other a moment, then look at what got through
                    await asyncio.sleep(0.5)
                    bob_got, alice_got = bob.received(), alice.received()
                    if audio:
                        assert bob.remote_tracks  # announced in the SDP ...
                        try:  # ... but no frame gets through
                            await asyncio.wait_for(bob.remote_tracks[0].recv(), 2)
                            bob_got.append("an audio frame")
                        except TimeoutError:
                            pass
                    for t in (ta, tb):
                        if not t.done():
                            t.cancel()
                results = []
                for t in (ta, tb):
                    try:
                        results.append(await t)
                    except (PeerRefused, asyncio.CancelledError) as exc:
                        results.append(exc)
                return Run(alice, bob, results[0], results[1], bob_got, alice_got)
            finally:
                await alice.close()
                await bob.close()

    return asyncio.run(main())


def _refused_by_bob(run: Run, reason: str) -> None:
    assert isinstance(run.bob_result, PeerRefused), run.bob_result
    assert run.bob_result.reason == reason
    assert run.bob.identity is None
    assert not run.bob.is_open and not run.alice.is_open
    assert run.bob_got == [] and run.alice_got == []
    assert run.bob.counters["refused"] == 1 and run.bob.counters[f"refused_{reason}"] == 1
    assert run.bob.counters["messages"] == 0 and run.alice.counters["messages"] == 0
    # the refusing side's DTLS transport failed before SRTP keys were derived
    transports = run.bob.pc._RTCPeerConnection__dtlsTransports
    assert transports
    for dtls in transports:
        assert dtls._rx_srtp is None and dtls._tx_srtp is None


def test_both_peers_authenticated_and_data_flows(world: World) -> None:
    run = run_pair(world)
    assert isinstance(run.alice_result, Identity) and isinstance(run.bob_result, Identity)
    assert run.alice_result.identity == BOB and run.alice_result.record == "3 1 1"
    assert run.bob_result.identity == ALICE and run.bob_result.record == "3 1 1"
    assert run.bob_got == [b"hello from alice"]
    assert run.alice_got == ["hello from bob"]
    assert run.alice.counters["accepted"] == 1 and run.bob.counters["accepted"] == 1
    for dtls in run.bob.pc._RTCPeerConnection__dtlsTransports:
        assert dtls._rx_srtp is not None  # keys derived once the peer was authenticated


def test_audio_over_srtp_after_both_peers_are_authenticated(world: World) -> None:
    run = run_pair(world, audio=True)
    assert isinstance(run.alice_result, Identity) and isinstance(run.bob_result, Identity)
    assert run.bob_got[0] == b"hello from alice"
    kind, rate, samples = run.bob_got[1]
    assert (kind, rate) == ("audio", 48000) and samples > 0  # a frame, decrypted (SRTP)


def test_audio_from_a_peer_with_another_key_never_arrives(world: World) -> None:
    run = run_pair(world, alice_key=world.mallory, audio=True)
    _refused_by_bob(run, "no-match")


def test_user_under_a_hashed_owner_name(world: World) -> None:
    run = run_pair(world, alice_name=ALICE_HASHED)
    assert isinstance(run.bob_result, Identity) and run.bob_result.identity == ALICE_HASHED
    assert ALICE_HASHED.endswith("._user.example.test") and "alice" not in ALICE_HASHED
    assert run.bob_got == [b"hello from alice"] and run.alice_got == ["hello from bob"]


def test_peer_with_another_key_is_refused(world: World) -> None:
    # Mallory claims Alice's name with her own key: her SDP fingerprint is consistent with her
    # certificate, but the TLSA at alice._user.example.test is for another key.
    run = run_pair(world, alice_key=world.mallory)
    _refused_by_bob(run, "no-match")
    assert run.bob_result.rejection is not None  # type: ignore[union-attr]


def test_refusal_works_in_the_other_direction(world: World) -> None:
    run = run_pair(world, bob_key=world.mallory)
    assert isinstance(run.alice_result, PeerRefused)
    assert run.alice_result.reason == "no-match"
    assert run.bob_got == [] and run.alice_got == []
    assert not run.alice.is_open and not run.bob.is_open


def test_name_outside_the_allow_list_is_refused_before_dns(world: World) -> None:
    run = run_pair(world, bob_allow=["._device.example.test"])
    _refused_by_bob(run, "not-allowed")
    assert run.bob.authenticator.counters["dns_lookups"] == 0


def test_bogus_dns_is_refused(world: World) -> None:
    with world.zones.inject(Fault("bad-signature", ALICE)):
        run = run_pair(world)
    _refused_by_bob(run, "dns-bogus")


def test_slow_dns_is_refused_after_the_authentication_timeout(world: World) -> None:
    with world.zones.inject(Fault("slow", ALICE, delay=8.0)):
        run = run_pair(world, bob_auth_timeout=1.0)
    _refused_by_bob(run, WebRTCReason.TIMEOUT)


def test_sdp_fingerprint_not_matching_the_presented_certificate(world: World) -> None:
    # The SDP names Mallory's certificate, Alice presents her own in DTLS.
    other = certs.self_signed(world.mallory, ALICE, now=certs_now())
    digest = hashlib.sha256(other.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    fake = ":".join(digest[i : i + 2] for i in range(0, 64, 2))

    def swap(sdp: str) -> str:
        lines = [
            f"a=fingerprint:sha-256 {fake}" if line.startswith("a=fingerprint:") else line
            for line in sdp.split("\r\n")
        ]
        return "\r\n".join(lines)

    run = run_pair(world, edit_offer=swap)
    _refused_by_bob(run, WebRTCReason.FINGERPRINT_MISMATCH)


def certs_now() -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)


def _drop_fingerprint(sdp: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=fingerprint:"))


def _double_fingerprint(sdp: str) -> str:
    out = []
    for line in sdp.split("\r\n"):
        out.append(line)
        if line.startswith("a=fingerprint:"):
            out.append(line)
    return "\r\n".join(out)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_drop_fingerprint, SdpReason.NO_FINGERPRINT),
        (_double_fingerprint, SdpReason.SEVERAL_FINGERPRINTS),
    ],
)
def test_offer_without_or_with_several_fingerprints_is_refused(
    world: World, edit: Callable[[str], str], reason: SdpReason
) -> None:
    async def main() -> None:
        async with resolver(world) as ra, resolver(world) as rb:
            alice = DancePeer(ALICE, world.alice, Authenticator(ra, allow=ALLOW), peer_name=BOB)
            bob = DancePeer(BOB, world.bob, Authenticator(rb, allow=ALLOW), peer_name=ALICE)
            try:
                offer = await alice.offer()
                with pytest.raises(PeerRefused) as info:
                    await bob.answer(edit(offer))
                assert info.value.reason == reason
                assert bob.counters[f"refused_{reason}"] == 1
                # aiortc never saw the offer: no remote description, no transport, no lookup
                assert bob.pc.remoteDescription is None
                assert bob.authenticator.counters["dns_lookups"] == 0
                with pytest.raises(PeerRefused):
                    await bob.connected(1)
            finally:
                await alice.close()
                await bob.close()

    asyncio.run(main())


def test_answer_with_several_fingerprints_is_refused_by_the_offerer(world: World) -> None:
    async def main() -> None:
        async with resolver(world) as ra, resolver(world) as rb:
            alice = DancePeer(ALICE, world.alice, Authenticator(ra, allow=ALLOW), peer_name=BOB)
            bob = DancePeer(BOB, world.bob, Authenticator(rb, allow=ALLOW), peer_name=ALICE)
            try:
                answer = await bob.answer(await alice.offer())
                with pytest.raises(PeerRefused) as info:
                    await alice.accept(_double_fingerprint(answer))
                assert info.value.reason == SdpReason.SEVERAL_FINGERPRINTS
                assert alice.pc.remoteDescription is None
            finally:
                await alice.close()
                await bob.close()

    asyncio.run(main())


def test_local_description_is_loopback_only_with_one_fingerprint(world: World) -> None:
    async def main() -> str:
        async with resolver(world) as ra:
            alice = DancePeer(ALICE, world.alice, Authenticator(ra, allow=ALLOW), peer_name=BOB)
            try:
                return await alice.offer()
            finally:
                await alice.close()

    sdp = asyncio.run(main())
    candidates = [line for line in sdp.split("\r\n") if line.startswith("a=candidate:")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates)
    assert sum(line.startswith("a=fingerprint:sha-256 ") for line in sdp.split("\r\n")) == 1
    assert "srflx" not in sdp and "relay" not in sdp
