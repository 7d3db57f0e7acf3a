"""The join server: a `dance.tls` handler that answers TS002 JoinReq with JoinAns over HTTPS.

    js = JoinServer(join_eui="70b3d57ed0000001", devices={"0004a30b001c0530": app_key},
                    network_servers={"ns1.netid-000013.example.test": "000013"})
    server = await serve(js.handle, "127.0.0.1", 443, cert=..., key=...,
                         authenticator=Authenticator(resolver, allow=js.allow_list()))

The network server is authenticated by `dance.tls` (``dane_clientid`` and its TLSA records)
before ``handle`` runs. One request per connection: ``POST path`` with ``Content-Type:
application/json`` and a Content-Length body of at most `MAX_MESSAGE` bytes, read by
`dance.http.h1.RequestReader`; the answer is written by h11, then the connection closes.

Refusals: HTTP errors (400 ``bad-request`` and the reader's reasons, 404, 405, 411 for a
chunked body, 413, 415, 408 ``request-timeout``) and message errors (400 with the
`MessageError` reason) carry ``{"error": reason}``; a valid JoinReq always gets a JoinAns,
with ``Result.ResultCode`` ``Success`` or the TS002 code of the refusal (``UnknownSender``
when SenderID is not the NetID of the authenticated network server, ``UnknownReceiver``,
``UnknownDevEUI``, ``MICFailed``, ``JoinReqFailed`` for a DevNonce already used).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

import h11

from dance.http.h1 import EndOfRequest, HttpError, RequestHead, RequestReader
from dance.identity import Identity
from dance.lorawan.frames import join_accept, join_request_mic_ok, session_keys
from dance.lorawan.messages import JOIN_ANS, JOIN_REQ, MAX_MESSAGE, MessageError, encode, parse
from dance.names import InvalidName, parse_client_name
from dance.tls.server import ROUTINE_ERRORS, until_client_leaves

__all__ = ["JoinServer"]

log = logging.getLogger("dance.lorawan.join")

MAX_HEAD: Final = 8 * 1024
MAX_NONCES: Final = 1024  # DevNonces remembered per device


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class JoinServer:
    """The join server's application: devices (DevEUI -> AppKey) and the network servers it
    serves (ClientName -> NetID). ``counters`` counts answers and refusals by reason."""

    def __init__(
        self,
        *,
        join_eui: str,
        devices: Mapping[str, bytes],
        network_servers: Mapping[str, str],
        path: str = "/",
        request_timeout: float = 10.0,
    ) -> None:
        self.join_eui = _hex_id(join_eui, 8, "join_eui")
        self.devices = {_hex_id(k, 8, "DevEUI"): bytes(v) for k, v in devices.items()}
        for dev, app_key in self.devices.items():
            if len(app_key) != 16:
                raise ValueError(f"AppKey of {dev} is not 16 bytes")
        self.network_servers = {
            _client_name(name): _hex_id(net_id, 3, "NetID")
            for name, net_id in network_servers.items()
        }
        self.path = path
        self.request_timeout = request_timeout
        self.counters: dict[str, int] = {}
        self._nonces: dict[str, OrderedDict[bytes, None]] = {}

    def allow_list(self) -> list[str]:
        """The Authenticator's allow-list: exactly the network servers' names."""
        return sorted(self.network_servers)

    def count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    # -- the connection ---------------------------------------------------------------------------

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identity: Identity
    ) -> None:
        """The `dance.tls.Handler`: one request, one answer, close."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            try:
                head, body = await asyncio.wait_for(
                    until_client_leaves(writer, self._read(reader, conn)), self.request_timeout
                )
                status, answer = self.answer(head, body, identity)
            except TimeoutError:
                status, answer = 408, {"error": "request-timeout"}
            except _Refused as exc:
                status, answer = exc.status, {"error": exc.reason}
            except HttpError as exc:
                status = 413 if exc.reason == "head-too-large" else 400
                answer = {"error": exc.reason}
            if "error" in answer:
                self.count(f"refused_{answer['error']}")
                log.info("join server: %s: refused: %s", identity.identity, answer["error"])
            self._respond(writer, conn, status, answer)
            await writer.drain()
        except ROUTINE_ERRORS as exc:
            self.count("client-gone")
            log.debug("join server: %s: connection ended: %r", identity.identity, exc)
        finally:
            writer.close()

    async def _read(
        self, reader: asyncio.StreamReader, conn: h11.Connection
    ) -> tuple[RequestHead, bytes]:
        parser = RequestReader(max_head=MAX_HEAD)
        head: RequestHead | None = None
        body = bytearray()
        while True:
            data = await reader.read(4096)
            if not data:
                parser.feed_eof()
                raise HttpError("incomplete", "connection closed before a request")
            conn.receive_data(data)  # h11 follows, to write the answer in the right state
            for event in parser.feed(data):
                if isinstance(event, RequestHead):
                    head = event
                    self.count("requests")
                    _check_head(event, self.path)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, EndOfRequest):
                    assert head is not None
                    return head, bytes(body)

    def _respond(
        self, writer: asyncio.StreamWriter, conn: h11.Connection, status: int, answer: Any
    ) -> None:
        payload = json.dumps(answer, separators=(",", ":")).encode()
        try:
            while conn.next_event() not in (h11.NEED_DATA, h11.PAUSED):
                pass
        except h11.RemoteProtocolError:
            pass  # h11 still lets a server answer 4xx
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
        try:
            data = conn.send(h11.Response(status_code=status, headers=headers))
            data = (data or b"") + (conn.send(h11.Data(data=payload)) or b"")
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # nothing was received: nothing to answer
            return
        writer.write(data)

    # -- the application ------------------------------------------------------------------------

    def answer(
        self, head: RequestHead, body: bytes, identity: Identity
    ) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON answer for one request from ``identity``."""
        try:
            req = parse(body, expect=JOIN_REQ)
        except MessageError as exc:
            return 400, {"error": exc.reason}
        net_id = self.network_servers.get(identity.client_name)
        if net_id is None:  # the allow-list is this table: only if they were built apart
            return 403, {"error": "unknown-network-server"}
        code = self._refusal(req, net_id)
        ans: dict[str, Any] = {
            "ProtocolVersion": "1.0",
            "SenderID": self.join_eui,
            "ReceiverID": req["SenderID"],
            "TransactionID": req["TransactionID"],
            "MessageType": JOIN_ANS,
            "Result": {"ResultCode": code or "Success"},
        }
        if code is None:
            ans.update(self._accept(req))
        self.count(f"joinans_{code or 'Success'}")
        log.info(
            "join server: %s (NetID %s): JoinReq %s for DevEUI %s: %s",
            identity.identity,
            net_id,
            req["TransactionID"],
            req["DevEUI"],
            code or "Success",
        )
        encode(ans)  # our own answers follow the schema too
        return 200, ans

    def _refusal(self, req: Mapping[str, Any], net_id: str) -> str | None:
        if req["SenderID"].lower() != net_id:
            return "UnknownSender"  # an authenticated network server speaking for another NetID
        if req["ReceiverID"].lower() != self.join_eui:
            return "UnknownReceiver"
        app_key = self.devices.get(req["DevEUI"].lower())
        if app_key is None:
            return "UnknownDevEUI"
        frame = bytes.fromhex(req["PHYPayload"])
        if not join_request_mic_ok(app_key, frame):
            return "MICFailed"
        used = self._nonces.setdefault(req["DevEUI"].lower(), OrderedDict())
        nonce = frame[17:19]
        if nonce in used:
            return "JoinReqFailed"  # a replayed JoinRequest
        used[nonce] = None
        if len(used) > MAX_NONCES:
            used.popitem(last=False)
        return None

    def _accept(self, req: Mapping[str, Any]) -> dict[str, Any]:
        app_key = self.devices[req["DevEUI"].lower()]
        frame = bytes.fromhex(req["PHYPayload"])
        app_nonce = secrets.token_bytes(3)
        net_id = bytes.fromhex(req["SenderID"])
        cf_list = bytes.fromhex(req.get("CFList", ""))
        accept = join_accept(
            app_key,
            app_nonce,
            net_id,
            bytes.fromhex(req["DevAddr"]),
            bytes.fromhex(req["DLSettings"]),
            req["RxDelay"],
            cf_list,
        )
        nwk, app = session_keys(app_key, app_nonce, net_id, frame[17:19])
        return {
            "PHYPayload": accept.hex().upper(),
            # KEKLabel "": the keys in clear inside the mutually authenticated TLS session
            "NwkSKey": {"KEKLabel": "", "AESKey": nwk.hex().upper()},
            "AppSKey": {"KEKLabel": "", "AESKey": app.hex().upper()},
        }


def _check_head(head: RequestHead, path: str) -> None:
    request = head.request
    if request.method != b"POST":
        raise _Refused(405, "method-not-allowed")
    if request.target.decode("ascii", "replace") != path:
        raise _Refused(404, "not-found")
    if head.chunked:
        raise _Refused(411, "length-required")
    if head.length > MAX_MESSAGE:
        raise _Refused(413, "body-too-large")
    types = [v for k, v in request.headers if k.lower() == b"content-type"]
    if len(types) != 1 or types[0].split(b";")[0].strip().lower() != b"application/json":
        raise _Refused(415, "unsupported-media-type")


def _client_name(name: str) -> str:
    """A network server's exact ClientName, canonical (never a suffix: one name, one NetID)."""
    if name.startswith((".", "*")):
        raise ValueError(f"a network server is one exact name, not {name!r}")
    try:
        return parse_client_name(name).text
    except InvalidName as exc:
        raise ValueError(f"bad network server name {name!r}: {exc}") from None


def _hex_id(value: str, size: int, label: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != size or len(value) != 2 * size:
        raise ValueError(f"{label} must be {2 * size} hex digits, not {value!r}")
    return value.lower()
