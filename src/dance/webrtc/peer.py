"""A WebRTC peer (aiortc) whose DTLS-SRTP media keys are authenticated by DNS (architecture
Example 8, section 4.1.8).

Each peer has a DNS identity (a ClientName, see docs/webrtc.md for the owner names) and a P-256
key whose SubjectPublicKeyInfo is published there as TLSA ``3 1 1``. The peer's DTLS certificate is
made from that key, and its SDP carries exactly one ``a=fingerprint`` (SHA-256).

Order of checks, each refusal with a stable reason code and counted:

1. the remote SDP, before aiortc sees it (`dance.webrtc.sdp.read_sdp`): exactly one SHA-256
   fingerprint, candidates on the allowed hosts only (loopback by default);
2. the DTLS handshake (aiortc, pyOpenSSL);
3. right after the handshake, before aiortc derives SRTP keys, marks the transport connected and
   starts SCTP (so before any application data can flow): the certificate the peer actually
   presented must be the one the SDP fingerprint names, and it must authenticate as the expected
   peer name through `dance.auth.Authenticator` (allow-list first, DNSSEC-validated TLSA, match).
   A refusal marks the DTLS transport failed: no SRTP keys, no SCTP association, no data channel.

Data-channel messages are delivered only after the peer was authenticated (a second guard).

aiortc has no hook for this, so the adapter reaches into three of its internals, per connection
(never globally): the certificate list of `RTCPeerConnection`, `RTCDtlsTransport._do_handshake`
(wrapped), and the host-candidate gathering of aioice's `Connection` (loopback addresses only;
aioice leaves 127.0.0.1 out by default). The extra pins ``aiortc>=1.9,<2``; tests/webrtc check the
behaviour against the installed version.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
from collections.abc import Iterable
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RTCDtlsTransport, State
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dance import certs
from dance.auth import Authenticator
from dance.credentials import CertificateChain, CredentialError
from dance.identity import Identity, Rejection
from dance.names import parse_client_name
from dance.webrtc.sdp import SdpError, SdpSummary, read_sdp

__all__ = ["DancePeer", "PeerRefused", "WebRTCReason"]

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1"})
MAX_MESSAGE = 64 * 1024
MAX_QUEUED = 256


class WebRTCReason(enum.StrEnum):
    """Stable reason codes of the adapter (besides `SdpReason` and `dance.identity.Reason`)."""

    FINGERPRINT_MISMATCH = "fingerprint-mismatch"  # presented certificate is not the SDP's
    NO_PEER_CERTIFICATE = "no-peer-certificate"
    NO_REMOTE_DESCRIPTION = "no-remote-description"
    HANDSHAKE_FAILED = "handshake-failed"
    TIMEOUT = "timeout"
    BAD_STATE = "bad-state"  # API used out of order


class PeerRefused(Exception):
    """The remote peer was refused. ``reason`` is a stable code (a `WebRTCReason`, an `SdpReason`
    or a `dance.identity.Reason` value); ``rejection`` is the Authenticator's, when it decided."""

    def __init__(self, reason: str, detail: str, rejection: Rejection | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.rejection = rejection


class _OneFingerprint(RTCCertificate):
    """An aiortc certificate that advertises one fingerprint (SHA-256), not one per hash."""

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        return [f for f in super().getFingerprints() if f.algorithm == "sha-256"]


class DancePeer:
    """One end of a DNS-authenticated WebRTC data channel (and optional media ``tracks``).

    ``name``: this peer's DNS identity (where its TLSA ``3 1 1`` is published);
    ``key``: its P-256 private key (the published key); ``peer_name``: the identity the other
    end must prove; ``authenticator``: policy and DNS (its allow-list must admit ``peer_name``).

    Offerer: ``sdp = await a.offer()``; answerer: ``sdp2 = await b.answer(sdp)``; offerer:
    ``await a.accept(sdp2)``; both: ``identity = await x.connected()``, then ``x.send(...)`` and
    ``await x.receive()``. Signalling is the caller's business (any channel: the SDP itself is
    not trusted, the DNS is).
    """

    def __init__(
        self,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        authenticator: Authenticator,
        *,
        peer_name: str,
        certificate: x509.Certificate | None = None,
        allowed_hosts: Iterable[str] = LOOPBACK,
        label: str = "dance",
        auth_timeout: float = 10.0,
        tracks: Iterable[MediaStreamTrack] = (),
    ) -> None:
        self.name = parse_client_name(name).text
        self.peer_name = parse_client_name(peer_name).text
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("WebRTC DTLS keys must be ECDSA P-256 (aiortc's DTLS cipher suites)")
        now = datetime.datetime.now(datetime.UTC)
        if certificate is None:
            certificate = certs.self_signed(key, self.name, now=now - datetime.timedelta(hours=1))
        elif certificate.public_key() != key.public_key():
            raise ValueError("the certificate is not for this key")
        self.certificate = certificate
        self.authenticator = authenticator
        self.allowed_hosts = frozenset(allowed_hosts)
        self.label = label
        self.auth_timeout = auth_timeout
        self.identity: Identity | None = None
        self.refusal: PeerRefused | None = None
        self.counters: dict[str, int] = {"accepted": 0, "refused": 0, "messages": 0}
        self._remote: SdpSummary | None = None
        self._channel: RTCDataChannel | None = None
        self._open = asyncio.Event()
        self._done = asyncio.Event()
        self._inbox: asyncio.Queue[bytes | str] = asyncio.Queue(MAX_QUEUED)
        self._patched: set[int] = set()
        self._role: str | None = None
        self._tracks = list(tracks)
        # the peer's media tracks (SRTP): announced by its SDP, but no frame arrives before the
        # DTLS gate accepted the peer (no SRTP keys before)
        self.remote_tracks: list[MediaStreamTrack] = []
        # no STUN or TURN: the default configuration would ask a public STUN server
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        setattr(self.pc, "_RTCPeerConnection__certificates", [_OneFingerprint(key, certificate)])  # noqa: B010
        self.pc.on("datachannel", self._adopt)
        self.pc.on("track", self.remote_tracks.append)
        self.pc.on("connectionstatechange", self._state_changed)

    # -- signalling ------------------------------------------------------------------------------

    async def offer(self) -> str:
        """Create the data channel and the offer; return the offer's SDP text."""
        self._begin("offerer")
        for track in self._tracks:
            self.pc.addTrack(track)
        self._adopt(self.pc.createDataChannel(self.label))
        self._harden()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self._local_sdp()

    async def answer(self, offer_sdp: str) -> str:
        """Check the remote offer, apply it and return the answer's SDP text.
        Raises `PeerRefused` (SDP reasons) before aiortc sees a refused offer."""
        self._begin("answerer")
        self._remote = self._read_remote(offer_sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        for track in self._tracks:
            self.pc.addTrack(track)
        self._harden()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self._local_sdp()

    async def accept(self, answer_sdp: str) -> None:
        """Check and apply the remote answer (offerer only); the connection then starts."""
        if self._role != "offerer" or self._remote is not None:
            raise PeerRefused(WebRTCReason.BAD_STATE, "accept() follows offer(), once")
        self._remote = self._read_remote(answer_sdp)
        self._harden()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    # -- data ----------------------------------------------------------------------------------

    async def connected(self, timeout: float = 30.0) -> Identity:
        """Wait until the data channel is open with an authenticated peer; raise `PeerRefused`
        if the peer was refused or nothing happened within ``timeout`` seconds."""
        open_wait = asyncio.ensure_future(self._open.wait())
        done_wait = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait(
                {open_wait, done_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            open_wait.cancel()
            done_wait.cancel()
        if self.refusal is not None:
            raise self.refusal
        if self._open.is_set() and self.identity is not None:
            return self.identity
        if self._open.is_set():  # cannot happen: the gate runs before SCTP; fail closed anyway
            raise self._refuse(WebRTCReason.BAD_STATE, "channel open without authentication")
        raise self._refuse(WebRTCReason.TIMEOUT, f"not connected within {timeout} s")

    @property
    def is_open(self) -> bool:
        return (
            self._channel is not None
            and self._channel.readyState == "open"
            and self.identity is not None
        )

    def send(self, data: bytes | str) -> None:
        if not self.is_open or self._channel is None:
            raise PeerRefused(
                WebRTCReason.BAD_STATE, "the channel is not open to an authenticated peer"
            )
        self._channel.send(data)

    async def receive(self, timeout: float = 30.0) -> bytes | str:
        return await asyncio.wait_for(self._inbox.get(), timeout)

    def received(self) -> list[bytes | str]:
        """What arrived and was not yet received (without waiting)."""
        out: list[bytes | str] = []
        while not self._inbox.empty():
            out.append(self._inbox.get_nowait())
        return out

    async def close(self) -> None:
        await self.pc.close()
        self._done.set()

    async def __aenter__(self) -> DancePeer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------

    def _begin(self, role: str) -> None:
        if self._role is not None:
            raise PeerRefused(WebRTCReason.BAD_STATE, f"already the {self._role}")
        self._role = role

    def _read_remote(self, text: str) -> SdpSummary:
        try:
            return read_sdp(text, allowed_hosts=self.allowed_hosts)
        except SdpError as exc:
            raise self._refuse(exc.reason, exc.detail) from None

    def _local_sdp(self) -> str:
        description = self.pc.localDescription
        text = description.sdp
        # our own description must pass the rules we apply to the peer's
        read_sdp(text, allowed_hosts=self.allowed_hosts)
        return text

    def _refuse(self, reason: str, detail: str, rejection: Rejection | None = None) -> PeerRefused:
        refusal = PeerRefused(str(reason), detail, rejection)
        if self.refusal is None:
            self.refusal = refusal
            self.counters["refused"] += 1
            key = f"refused_{reason}"
            self.counters[key] = self.counters.get(key, 0) + 1
            log.info("webrtc peer %s refused: %s", self.peer_name, refusal)
        self._done.set()
        return refusal

    def _state_changed(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            if self.refusal is None and self.identity is None:
                self._refuse(WebRTCReason.HANDSHAKE_FAILED, f"connection {self.pc.connectionState}")
            self._done.set()

    def _adopt(self, channel: RTCDataChannel) -> None:
        if self._channel is not None:  # one channel per peer; refuse extra ones
            channel.close()
            return
        self._channel = channel

        def on_open() -> None:
            if self.identity is not None:
                self._open.set()

        def on_message(message: bytes | str) -> None:
            if self.identity is None or len(message) > MAX_MESSAGE or self._inbox.full():
                self.counters["dropped"] = self.counters.get("dropped", 0) + 1
                return
            self.counters["messages"] += 1
            self._inbox.put_nowait(message)

        channel.on("open", on_open)
        channel.on("message", on_message)
        if channel.readyState == "open":
            on_open()

    def _harden(self) -> None:
        """Per connection: loopback-only host candidates and the DANE gate on every DTLS
        transport aiortc created so far (called before gathering and before connecting)."""
        for ice in getattr(self.pc, "_RTCPeerConnection__iceTransports"):  # noqa: B009
            connection = ice.iceGatherer._connection
            if id(connection) not in self._patched:
                self._patched.add(id(connection))
                setattr(connection, "gather_candidates", _gather_on(connection, self.allowed_hosts))  # noqa: B010
        for dtls in getattr(self.pc, "_RTCPeerConnection__dtlsTransports"):  # noqa: B009
            if id(dtls) not in self._patched:
                self._patched.add(id(dtls))
                setattr(dtls, "_do_handshake", self._gate(dtls))  # noqa: B010

    def _gate(self, dtls: RTCDtlsTransport) -> Any:
        handshake = dtls._do_handshake

        async def gated() -> None:
            await handshake()
            if dtls._state == State.FAILED:
                self._refuse(WebRTCReason.HANDSHAKE_FAILED, "DTLS handshake failed")
                return
            try:
                accepted = await asyncio.wait_for(self._check(dtls), self.auth_timeout)
            except TimeoutError:
                self._refuse(WebRTCReason.TIMEOUT, "peer authentication took too long")
                accepted = False
            if not accepted:
                dtls._set_state(State.FAILED)

        return gated

    async def _check(self, dtls: RTCDtlsTransport) -> bool:
        """The peer's presented certificate against its SDP fingerprint and its TLSA records."""
        # every DTLS transport is checked (bundled or not); decisions are cached by the
        # Authenticator, so a second transport costs no query
        ssl = dtls._ssl
        cert = ssl.get_peer_certificate(as_cryptography=True) if ssl is not None else None
        if cert is None:
            self._refuse(WebRTCReason.NO_PEER_CERTIFICATE, "the peer presented no certificate")
            return False
        der = cert.public_bytes(serialization.Encoding.DER)
        if self._remote is None:
            self._refuse(WebRTCReason.NO_REMOTE_DESCRIPTION, "no checked remote description")
            return False
        if not self._remote.matches(der):
            self._refuse(
                WebRTCReason.FINGERPRINT_MISMATCH,
                "the certificate presented in DTLS is not the one the SDP fingerprint names",
            )
            return False
        try:
            chain = CertificateChain.from_der([der])
        except CredentialError as exc:
            self._refuse("malformed-input", str(exc))
            return False
        result = await self.authenticator.authenticate(self.peer_name, chain)
        if isinstance(result, Rejection):
            self._refuse(result.reason.value, result.detail, result)
            return False
        if self.identity is None:
            self.identity = result
            self.counters["accepted"] += 1
        log.info("webrtc peer authenticated as %s (%s)", result.identity, result.record)
        return True


def _gather_on(connection: Any, hosts: frozenset[str]) -> Any:
    """aioice's Connection.gather_candidates, limited to ``hosts`` (no STUN, no TURN)."""

    async def gather_candidates() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        for component in connection._components:
            connection._local_candidates += await connection.get_component_candidates(
                component=component, addresses=sorted(hosts)
            )
        connection._local_candidates_end = True

    return gather_candidates
