"""LoRaWAN 1.0.x join frames (LoRaWAN 1.0.3 sections 6.2.4 to 6.2.5), for the join server.

JoinRequest: MHDR 0x00 | JoinEUI (8, LE) | DevEUI (8, LE) | DevNonce (2) | MIC (4), MIC =
aes128_cmac(AppKey, MHDR | JoinEUI | DevEUI | DevNonce)[0:4].
JoinAccept: MHDR 0x20 | aes128_decrypt(AppKey, AppNonce (3) | NetID (3, LE) | DevAddr (4, LE) |
DLSettings | RxDelay | [CFList (16)] | MIC). Session keys: aes128_encrypt(AppKey, 0x01 / 0x02 |
AppNonce | NetID | DevNonce | pad16).
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

__all__ = ["join_accept", "join_request", "join_request_mic_ok", "session_keys"]


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES128(key))
    mac.update(data)
    return mac.finalize()


def _ecb(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES128(key), modes.ECB())  # noqa: S305 - LoRaWAN 1.0.x
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def join_request(app_key: bytes, join_eui: bytes, dev_eui: bytes, dev_nonce: bytes) -> bytes:
    """The JoinRequest frame a device sends (EUIs big-endian as written in JSON)."""
    body = b"\x00" + join_eui[::-1] + dev_eui[::-1] + dev_nonce
    return body + _cmac(app_key, body)[:4]


def join_request_mic_ok(app_key: bytes, frame: bytes) -> bool:
    return len(frame) == 23 and hmac.compare_digest(_cmac(app_key, frame[:19])[:4], frame[19:])


def join_accept(
    app_key: bytes,
    app_nonce: bytes,
    net_id: bytes,
    dev_addr: bytes,
    dl_settings: bytes,
    rx_delay: int,
    cf_list: bytes = b"",
) -> bytes:
    """The JoinAccept frame (encrypted as the device expects it)."""
    mhdr = b"\x20"
    plain = app_nonce + net_id[::-1] + dev_addr[::-1] + dl_settings + bytes([rx_delay]) + cf_list
    mic = _cmac(app_key, mhdr + plain)[:4]
    return mhdr + _ecb(app_key, plain + mic, decrypt=True)


def session_keys(
    app_key: bytes, app_nonce: bytes, net_id: bytes, dev_nonce: bytes
) -> tuple[bytes, bytes]:
    """(NwkSKey, AppSKey) of LoRaWAN 1.0.x."""
    tail = app_nonce + net_id[::-1] + dev_nonce
    pad = bytes(16 - 1 - len(tail))
    return (
        _ecb(app_key, b"\x01" + tail + pad, decrypt=False),
        _ecb(app_key, b"\x02" + tail + pad, decrypt=False),
    )
