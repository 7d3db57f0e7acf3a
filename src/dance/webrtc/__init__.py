"""WebRTC peers whose DTLS-SRTP keys are authenticated by DNS (architecture Example 8).

`dance.webrtc.sdp` (strict SDP fingerprint and candidate checks) needs nothing optional;
`DancePeer`, `PeerRefused` and `WebRTCReason` need the ``webrtc`` extra (aiortc) and are imported
on first use. See docs/webrtc.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dance.webrtc.sdp import SdpError, SdpReason, SdpSummary, read_sdp

if TYPE_CHECKING:
    from dance.webrtc.peer import DancePeer, PeerRefused, WebRTCReason

__all__ = [
    "DancePeer",
    "PeerRefused",
    "SdpError",
    "SdpReason",
    "SdpSummary",
    "WebRTCReason",
    "read_sdp",
]

_LAZY = {"DancePeer", "PeerRefused", "WebRTCReason"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from dance.webrtc import peer

        return getattr(peer, name)
    raise AttributeError(name)
