"""The long fuzz run (``make fuzz``): the hypothesis fuzz tests (tests/fuzz) with a large budget,
then plain mutation loops over every front door for raw throughput, with the same properties
as the tests (restated here: benchmarks stand alone, without the test package).

Doors: ``clientid`` (dane_clientid extension bytes and the ClientName parser), ``proxyv2``
(encoder against an independent decoder), ``http`` (strict reader and identity relay, checked
with h11 and a lenient LF-splitting reader), ``dns`` (the authority's message handler, UPDATE
without a valid TSIG must not change the zone), ``cbor``, ``jose``, ``cose``, and ``smtp``
when the sans-I/O SMTP reader is present.

Prints, per door, inputs, seconds and inputs per second, and the total; exits non-zero after
the first failures (each printed with its input, at most a few per door).

    .venv/bin/python bench/fuzz_long.py                      # ~2.8 M inputs (the default)
    .venv/bin/python bench/fuzz_long.py --scale 0.1 --hypothesis 3   # a short version
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# Inputs per door at --scale 1 (2.6 million; the hypothesis phase adds its own).
PLAN = {
    "clientid": 600_000,
    "proxyv2": 300_000,
    "cbor": 500_000,
    "http": 300_000,
    "jose": 250_000,
    "cose": 250_000,
    "dns": 120_000,
    "smtp": 300_000,
}
BATCH = 200  # inputs between two checks of the clock; a batch must end within HANG seconds
HANG = 60.0
MAX_FAILURES = 5


class Failure(Exception):
    pass


class Hang(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise Failure(message)


def mutate(rng: random.Random, data: bytes, pieces: list[bytes], edits: int = 4) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, edits)):
        kind = rng.randrange(6)
        at = rng.randint(0, len(buf))
        if kind == 0 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif kind == 1:
            buf[at:at] = rng.choice(pieces)
        elif kind == 2 and buf:
            del buf[at : at + rng.randint(1, 8)]
        elif kind == 3 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 4:
            buf[at:at] = buf[at : at + rng.randint(1, 24)]
        elif buf:
            i = min(at, len(buf) - 1)
            buf[i : i + 1] = bytes(buf[i : i + 1]).swapcase()
    return bytes(buf)


# -- clientid ---------------------------------------------------------------------------------


def door_clientid(rng: random.Random) -> Callable[[], None]:
    from dance.names import InvalidName, parse_client_name
    from dance.tls.bridge import ExtensionDecodeError, decode_client_name, encode_client_name

    label_re = re.compile(rb"[a-z0-9_-]{1,63}")
    names = [
        b"sensor7._device.example.test",
        b"_user.example.com",
        b"xn--bcher-kva.example",
        b"a" * 63 + b"." + b"b" * 63 + b"." + b"c" * 63 + b"." + b"d" * 61,
        b"_smtp-client.mail.example.org",
    ]
    pieces = [
        b".",
        b"..",
        b"\x00",
        b"*",
        b"\\",
        b" ",
        b"\x80",
        b"A",
        b"_",
        b"-",
        b"xn--",
        b"a" * 64,
    ]

    def one() -> None:
        r = rng.random()
        if r < 0.3:
            data = rng.randbytes(rng.randint(0, 40))
        else:
            body = mutate(rng, rng.choice(names), pieces)[:255]
            length = len(body) if r < 0.9 else rng.randrange(256)
            data = bytes([length]) + body
        try:
            raw = decode_client_name(data)
        except ExtensionDecodeError:
            check(not data or data[0] != len(data) - 1, f"refused a well-framed {data!r}")
            return
        check(data[0] == len(data) - 1 and raw == data[1:], f"bad framing accepted {data!r}")
        try:
            name = parse_client_name(raw)
        except InvalidName:
            return
        labels = raw.lower().split(b".")
        check(raw.isascii() and all(label_re.fullmatch(lb) for lb in labels), f"accepted {raw!r}")
        check(sum(len(lb) + 1 for lb in labels) + 1 <= 255, f"too long accepted {raw!r}")
        check(name.text == raw.decode().lower() and parse_client_name(name.text) == name, "canon")
        check(decode_client_name(encode_client_name(name.text)) == name.text.encode(), "roundtrip")

    return one


# -- proxyv2 ----------------------------------------------------------------------------------

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def _proxy_decode(data: bytes) -> tuple[int, str, int, str, int, list[tuple[int, bytes]]]:
    """PROXY v2 from the HAProxy specification (independent of dance's encoder)."""
    check(data[:12] == SIG and data[12] == 0x21, "signature / version / command")
    fam = data[13]
    length = int.from_bytes(data[14:16], "big")
    check(len(data) == 16 + length, "length field")
    body = data[16:]
    width = {0x11: 4, 0x21: 16}.get(fam)
    check(width is not None, "family")
    assert width is not None
    src = str(ipaddress.ip_address(body[:width]))
    dst = str(ipaddress.ip_address(body[width : 2 * width]))
    sport = int.from_bytes(body[2 * width : 2 * width + 2], "big")
    dport = int.from_bytes(body[2 * width + 2 : 2 * width + 4], "big")
    pos, tlvs = 2 * width + 4, []
    while pos < len(body):
        check(pos + 3 <= len(body), "TLV header")
        tlen = int.from_bytes(body[pos + 1 : pos + 3], "big")
        check(pos + 3 + tlen <= len(body), "TLV value")
        tlvs.append((body[pos], body[pos + 3 : pos + 3 + tlen]))
        pos += 3 + tlen
    return fam, src, sport, dst, dport, tlvs


def door_proxyv2(rng: random.Random) -> Callable[[], None]:
    from dance.tls.proxyv2 import ProxyV2Error, encode_header

    odd = ["1.2.3", "01.2.3.4", "::g", "", "1.2.3.4 ", "localhost", "::ffff:1.2.3.4", "0.0.0.0"]

    def address() -> str:
        r = rng.random()
        if r < 0.45:
            return str(ipaddress.IPv4Address(rng.getrandbits(32)))
        if r < 0.9:
            return str(ipaddress.IPv6Address(rng.getrandbits(128)))
        return rng.choice(odd)

    def one() -> None:
        src, dst = (address(), rng.randint(-5, 70000)), (address(), rng.randint(-5, 70000))
        tlv = rng.choice([0xE0, 0xEF, rng.randrange(256)])
        size = rng.choice([0, 1, 30, 200, 65535 - 15, 65535 - 14, 65535 - 39, 65535 - 38])
        identity = "".join(rng.choice("ab.-_\x00\x7fü") for _ in range(min(size, 40)))
        if size > 40:
            identity = identity + "a" * (size - len(identity))
        try:
            s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
            fits = (12 if s.version == 4 else 36) + 3 + len(identity) <= 65535
            ok = (
                s.version == d.version
                and 0 <= src[1] <= 65535
                and 0 <= dst[1] <= 65535
                and 0xE0 <= tlv <= 0xEF
                and identity.isascii()
                and fits
            )
        except ValueError:
            ok = False
        try:
            header = encode_header(src, dst, identity, tlv_type=tlv)
        except ProxyV2Error:
            check(not ok, f"refused an encodable header {src} {dst} {tlv:#x} {len(identity)}")
            return
        check(ok, f"encoded what cannot be encoded: {src} {dst} {tlv:#x} {identity[:20]!r}")
        fam, s_txt, sport, d_txt, dport, tlvs = _proxy_decode(header)
        check(fam == (0x11 if s.version == 4 else 0x21), "family")
        check((s_txt, sport, d_txt, dport) == (str(s), src[1], str(d), dst[1]), "addresses")
        check(tlvs == [(tlv, identity.encode())], "TLV")

    return one


# -- http -------------------------------------------------------------------------------------

HTTP_CORPUS = [
    b"GET /a HTTP/1.1\r\nHost: x\r\nX-DANCE-Client-ID: admin\r\n\r\n",
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /d HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
    b"GET /e HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /f HTTP/1.1\r\nHost: x\r\nX_DANCE_Client_ID: a\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n",
]
HTTP_PIECES = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\x00",
    b" ",
    b"\t",
    b"\r\n ",
    b"_",
    b"-",
    b"0",
    b"+",
    b"X-DANCE-Client-ID: evil\r\n",
    b"x_dance_client_id: evil\r\n",
    b"X-DANCE-Client-ID: e\n",
    b"X-DANCE-User: root\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5, 5\r\n",
    b"GET /s HTTP/1.1\r\nHost: y\r\nX-DANCE-Client-ID: evil\r\n\r\n",
]


def door_http(rng: random.Random) -> Callable[[], None]:
    import h11

    from dance.http.h1 import HttpError, RequestHead, RequestReader, normalize_name
    from dance.http.relay import IdentityRelay

    me = b"sensor7._device.example.test"
    idnames = {"x-dance-client-id", "x-dance-user"}
    bare = re.compile(rb"\r(?!\n)|(?<!\r)\n|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\n[ \t]")

    def h11_identities(out: bytes) -> list[list[bytes]]:
        seen, rest = [], out
        while rest:
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(rest)
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            check(isinstance(event, h11.Request), f"backend cannot parse {rest[:80]!r}")
            seen.append([v for n, v in event.headers.raw_items() if normalize_name(n) in idnames])
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    return seen
                if isinstance(ev, h11.EndOfMessage):
                    break
            rest = conn.trailing_data[0]
        return seen

    def lenient_identities(out: bytes) -> list[list[bytes]]:
        """Identity fields per request as a lenient server reads the relay's output: head
        lines split on LF with CR stripped, bodies skipped by Content-Length or chunk sizes."""
        seen, pos = [], 0
        while pos < len(out):
            ends = [e for e in (out.find(b"\n\n", pos), out.find(b"\r\n\r\n", pos)) if e >= 0]
            stop = (
                min(ends) + (2 if min(ends) == out.find(b"\n\n", pos) else 4) if ends else len(out)
            )
            lines = [ln.rstrip(b"\r") for ln in out[pos:stop].split(b"\n")[1:] if ln.strip()]
            fields = [(n.strip(), v.strip()) for n, _, v in (ln.partition(b":") for ln in lines)]
            seen.append([v for n, v in fields if normalize_name(n) in idnames])
            pos = stop
            if any(n.lower() == b"transfer-encoding" for n, _ in fields):
                while pos < len(out):
                    eol = out.find(b"\n", pos)
                    if eol < 0:
                        return seen
                    size = int(out[pos:eol].strip() or b"0", 16)
                    pos = eol + 1 + size + (2 if size else 0)
                    if size == 0:
                        pos = out.find(b"\n", pos) + 1 or len(out)
                        break
            else:
                pos += sum(int(v) for n, v in fields if n.lower() == b"content-length")
        return seen

    def one() -> None:
        data = mutate(rng, b"".join(rng.sample(HTTP_CORPUS, rng.randint(1, 2))), HTTP_PIECES)
        relay = IdentityRelay("X-DANCE-Client-ID", me.decode(), max_head=2048)
        reader = RequestReader(max_head=2048)
        out, pos, heads = b"", 0, 0
        cuts = [rng.randint(1, 64) for _ in range(rng.randint(0, 4))] + [len(data)]
        error = None
        for cut in cuts:
            piece = data[pos : pos + cut]
            pos += cut
            try:
                out += relay.feed(piece)
            except HttpError as exc:
                out += exc.forward
                error = exc
                break
        try:
            heads = sum(isinstance(e, RequestHead) for e in reader.feed(data))
        except HttpError as exc:
            heads = sum(isinstance(e, RequestHead) for e in exc.events)
        if heads:  # the first head accepted: CRLF only, no controls, no folding
            end = data.find(b"\r\n\r\n")
            check(end >= 0 and not bare.search(data, 0, end + 4), f"bad head accepted {data!r}")
        if error is not None:
            check(isinstance(error.reason, str) and error.status == 400, "error shape")
        seen = h11_identities(out)
        check(all(ids == [me] for ids in seen), f"identities {seen} for {data!r}")
        lenient = lenient_identities(out)
        check(all(ids == [me] for ids in lenient), f"lenient identities {lenient} for {data!r}")

    return one


# -- dns --------------------------------------------------------------------------------------


def door_dns(rng: random.Random) -> Iterator[Callable[[], None]]:
    import dns.message
    import dns.name
    import dns.update

    from dance.authority import Authority, Limits, ZoneDir, generate_tsig_key
    from dance.tsig import TSIGKey

    zone = dns.name.from_text("example.test.")
    key = generate_tsig_key("dance-update")
    wrong = TSIGKey(key.name, key.algorithm, bytes(32))
    failures: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info or record.levelno >= logging.ERROR:
                failures.append(record)

    logging.getLogger("dance.authority").addHandler(Catch())
    logging.getLogger("dance.authority").propagate = False
    with tempfile.TemporaryDirectory() as tmp:
        store = ZoneDir(Path(tmp) / "zones")
        store.init_zone(zone)
        with store.zone_path(zone).open("a") as out:
            out.write("sensor7._device.example.test. 300 IN TLSA 3 1 1 " + "ab" * 32 + "\n")
            out.write("www.example.test. 300 IN A 192.0.2.1\n")
        auth = Authority(store.path, tsig_keys=[key], limits=Limits(rate=0))
        try:
            corpus = [
                dns.message.make_query("sensor7._device.example.test.", "TLSA", want_dnssec=True),
                dns.message.make_query("nope.example.test.", "A"),
                dns.message.make_query("example.test.", "AXFR"),
            ]
            wires = [m.to_wire() for m in corpus]
            for signer in (None, wrong, key):
                u = dns.update.UpdateMessage("example.test.")
                u.add("fuzz._device", 300, "TLSA", "3 1 1 " + "ef" * 32)
                u.delete("www", "A")
                if signer is not None:
                    u.use_tsig({signer.dns_name: signer.to_dnspython()}, signer.dns_name)
                wires.append(u.to_wire())
            # The signed update is applied once here: every copy after it is a replay.
            auth.handle(wires[-1], "tcp")
            q = dns.message.make_query("example.test.", "SOA")
            q.use_tsig({key.dns_name: key.to_dnspython()}, key.dns_name)
            wires.append(q.to_wire())
            pieces = [b"\x00", b"\xc0\x0c", b"\xff\xff", b"\x00\x01\x00\x01", b"\x29\x10\x00"]

            def one() -> None:
                if rng.random() < 0.1:
                    wire = rng.randbytes(rng.randint(0, 80))
                else:
                    wire = mutate(rng, rng.choice(wires), pieces)
                serial, applied = auth.serial(zone), auth.stats.updates_applied
                failures.clear()
                replies = auth.handle(wire, rng.choice(["udp", "tcp"]))
                check(not failures, f"logged failure {failures[:1]} for {wire!r}")
                check(
                    auth.serial(zone) == serial and auth.stats.updates_applied == applied,
                    f"zone changed by {wire!r}",
                )
                for reply in replies or ():
                    check(reply[:2] == wire[:2] and reply[2] & 0x80, f"reply header {reply!r}")
                    dns.message.from_wire(reply, keyring=False)

            yield one
        finally:
            auth.close()


# -- cbor, jose, cose -------------------------------------------------------------------------


def door_cbor(rng: random.Random) -> Callable[[], None]:
    import cbor2

    from dance.message.cbor import MAX_DEPTH, Tag, decode
    from dance.message.errors import MessageError

    def value(depth: int) -> Any:
        r = rng.random()
        if depth > 12 or r < 0.35:
            return rng.choice([0, -1, 2**64 - 1, -(2**64), 1.5, "t", b"b", None, True, 23])
        if r < 0.6:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        if r < 0.85:
            return {rng.choice([1, -1, "k", 4, 33]): value(depth + 1) for _ in range(2)}
        return cbor2.CBORTag(rng.choice([18, 96, 61]), value(depth + 1))

    def plain(v: Any) -> bool:
        if isinstance(v, Tag):
            return False
        if isinstance(v, list):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(plain(x) for x in v.values())
        return not isinstance(v, float)

    def depth_of(v: Any) -> int:
        if isinstance(v, Tag):
            return 1 + depth_of(v.value)
        if isinstance(v, list):
            return 1 + max((depth_of(x) for x in v), default=-1)
        if isinstance(v, dict):
            return 1 + max((depth_of(x) for x in v.values()), default=-1)
        return 0

    pieces = [b"\x9f", b"\xff", b"\x5f", b"\xbf", b"\x1b" + b"\xff" * 8, b"\x81" * 12, b"\xd2"]

    def one() -> None:
        r = rng.random()
        if r < 0.2:
            data = rng.randbytes(rng.randint(0, 60))
        elif r < 0.3:
            data = rng.choice([b"\x81", b"\xa1\x01", b"\xd2"]) * rng.randint(0, 40) + b"\x00"
        else:
            data = cbor2.dumps(value(0))
            if r > 0.5:
                data = mutate(rng, data, pieces)
        try:
            got = decode(data)
        except MessageError as exc:
            check(exc.reason.value in ("malformed", "too-large", "duplicate-header"), str(exc))
            return
        check(depth_of(got) <= MAX_DEPTH, f"too deep accepted {data!r}")
        if plain(got):
            theirs = cbor2.loads(data)
            theirs = None if theirs is cbor2.undefined else theirs
            check(theirs == got or b"\xf7" in data, f"cbor2 reads {data!r} otherwise")

    return one


def _message_doors(rng: random.Random) -> tuple[Callable[[], None], Callable[[], None]]:
    import datetime

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from dance import certs
    from dance.message import (
        MessageError,
        decrypt_cose,
        decrypt_jwe,
        encrypt_cose,
        encrypt_jwe,
        parse_message,
        sign_cose,
        sign_jws,
    )

    name = "sensor7._device.example.test"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    cert = certs.self_signed(ec_key, name, now=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC))
    payload = b'{"t":21.5}'
    jws = [
        (sign_jws(payload, ec_key, name), ec_key),
        (sign_jws(payload, ed_key, name), ed_key),
        (sign_jws(payload, ec_key, name, serialization="json"), ec_key),
    ]
    jwe = encrypt_jwe(payload, ec_key.public_key(), name)
    cose = [
        (sign_cose(payload, ec_key, name), ec_key),
        (sign_cose(payload, ed_key, name, tagged=False, x5u=True), ed_key),
        (sign_cose(payload, ec_key, name, certificates=[cert]), ec_key),
    ]
    cose_enc = encrypt_cose(payload, ec_key.public_key(), name)
    b64 = [c.encode() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"]
    jpieces = [*b64, b".", b"=", b"+", b"/", b" ", b"\n", b'"', b"{", b"}", b"\\u0061"]
    cpieces = [b"\x00", b"\xff", b"\x9f", b"\x5b" + b"\xff" * 8, b"\x81" * 10, b"\xd2", b"\x40"]

    def parts(token: str) -> Any:
        doc = json.loads(token)
        member = doc["signatures"][0] if "signatures" in doc else doc
        return doc["payload"], member["protected"], member["signature"]

    def jose_one() -> None:
        if rng.random() < 0.15:
            token = mutate(rng, jwe.encode(), jpieces)
            try:
                plain = decrypt_jwe(token, ec_key)
            except MessageError as exc:
                check(exc.reason.value != "internal", str(exc))
                return
            check(plain == payload and token.strip() == jwe.encode(), f"JWE {token!r}")
            return
        original, key = rng.choice(jws)
        token = mutate(rng, original.encode(), jpieces)
        if rng.random() < 0.3:  # the last character of a base64url part: pad bits
            ends = [m.start() - 1 for m in re.finditer(rb'[."]|$', token) if m.start()]
            i = rng.choice(ends)
            if 0 <= i < len(token) and token[i : i + 1] in b64:
                swapped = b64[b64.index(token[i : i + 1]) ^ rng.randint(1, 3)]
                token = token[:i] + swapped + token[i + 1 :]
        try:
            msg = parse_message(token)
            ok = msg.verify_with(key.public_key())
        except MessageError as exc:
            check(exc.reason.value != "internal", str(exc))
            return
        if ok:
            text = token.decode()
            same = (
                parts(text) == parts(original) if original[0] == "{" else text.strip() == original
            )
            check(same and msg.payload == payload, f"another token verified: {token!r}")

    def cose_one() -> None:
        if rng.random() < 0.15:
            data = mutate(rng, cose_enc, cpieces)
            try:
                plain = decrypt_cose(data, ec_key)
            except MessageError as exc:
                check(exc.reason.value != "internal", str(exc))
                return
            check(plain == payload, "COSE_Encrypt decrypted to something else")
            return
        original, key = rng.choice(cose)
        data = mutate(rng, original, cpieces)
        try:
            msg = parse_message(data)
            ok = msg.verify_with(key.public_key())
        except MessageError as exc:
            check(exc.reason.value != "internal", str(exc))
            return
        if ok:
            import cbor2

            def signed(raw: bytes) -> Any:
                item = cbor2.loads(raw)
                body = item.value if isinstance(item, cbor2.CBORTag) else item
                return bytes(body[0]), bytes(body[2]), bytes(body[3])

            check(signed(data) == signed(original), f"another COSE_Sign1 verified: {data!r}")

    return jose_one, cose_one


# -- smtp (when the sans-I/O reader exists) ---------------------------------------------------


def _smtp_reference(stream: bytes, max_command: int, max_line: int) -> list[Any]:
    """RFC 5321 read strictly: CRLF only, no NUL, line limits, end of data only at CRLF.CRLF
    (a line that is exactly "."); message text joined into one event per run."""
    out: list[Any] = []
    pos, data = 0, False
    while True:
        limit = max_line if data else max_command
        too_long = ("violation", "line-too-long" if data else "command-too-long", pos + limit)
        j, end = pos, 0
        while not end:
            if j >= pos + limit:
                if j < len(stream):
                    out.append(too_long)
                return out
            if j >= len(stream):
                return out
            byte = stream[j]
            if byte == 0:
                out.append(("violation", "nul", j))
                return out
            if byte == 0x0A:
                out.append(("violation", "bare-lf", j))
                return out
            if byte == 0x0D:
                if j + 1 >= len(stream):
                    return out
                if stream[j + 1] != 0x0A:
                    out.append(("violation", "bare-cr", j))
                    return out
                if j + 1 >= pos + limit:
                    out.append(too_long)
                    return out
                end = j + 2
            j += 1
        line, pos = stream[pos:end], end
        if not data:
            out.append(("line", line[:-2]))
            data = line[:-2].upper() == b"DATA"
        elif line == b".\r\n":
            out.append(("end",))
            data = False
        elif out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + line)
        else:
            out.append(("data", line))


def door_smtp(rng: random.Random) -> Callable[[], None] | None:
    try:
        from dance import smtp_framing as framing  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    session = (
        b"EHLO c.example\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
        b"Subject: hi\r\n\r\nline one\r\n..dot\r\n.\r\nQUIT\r\n"
    )
    pieces = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\r\n.\r\r\n",
        b"\r\n\x00.\r\n",
        b"\r\n.\r\n",
        b"\r\nXCLIENT LOGIN=admin\r\n",
        b"\x00",
        b"\r",
        b"\n",
        b"\r\n",
        b"a" * 70,
        b"DATA\r\n",
    ]
    max_command, max_line = 64, 100

    def one() -> None:
        stream = rng.randbytes(rng.randint(0, 60)) if rng.random() < 0.1 else session
        stream = mutate(rng, stream, pieces)
        framer = framing.Framer(max_command=max_command, max_line=max_line)
        events: list[Any] = []
        pos = 0
        cuts = [rng.randint(1, 40) for _ in range(rng.randint(0, 4))] + [len(stream)]
        for cut in cuts:
            framer.feed(stream[pos : pos + cut])
            pos += cut
            while (event := framer.next_event()) is not None:
                if isinstance(event, framing.Violation):
                    events.append(("violation", event.reason, event.offset))
                    break
                if isinstance(event, framing.Line):
                    events.append(("line", event.text))
                    if event.text.upper() == b"DATA":
                        framer.start_data()
                elif isinstance(event, framing.Data):
                    if events and events[-1][0] == "data":
                        events[-1] = ("data", events[-1][1] + event.raw)
                    else:
                        events.append(("data", event.raw))
                else:
                    events.append(("end",))
            if (events and events[-1][0] == "violation") or pos >= len(stream):
                break
        want = _smtp_reference(stream, max_command, max_line)
        check(events == want, f"framer {events!r:.300} != reference {want!r:.300}")

    return one


# -- the runner -------------------------------------------------------------------------------


@contextlib.contextmanager
def watchdog(seconds: float, what: list[bytes | str]) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise Hang(f"no progress for {seconds} s; last input {what[0]!r:.300}")

    previous = signal.signal(signal.SIGALRM, fire)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_door(
    name: str, one: Callable[[], None], count: int, deadline: float
) -> tuple[int, float, list[str]]:
    failures: list[str] = []
    done = 0
    start = time.perf_counter()
    last: list[bytes | str] = [""]
    with watchdog(HANG, last):
        while done < count and time.monotonic() < deadline:
            signal.setitimer(signal.ITIMER_REAL, HANG)
            for _ in range(min(BATCH, count - done)):
                try:
                    one()
                except Failure as exc:
                    failures.append(str(exc)[:600])
                except Hang:
                    raise
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}"[:600])
                done += 1
                if len(failures) >= MAX_FAILURES:
                    return done, time.perf_counter() - start, failures
    return done, time.perf_counter() - start, failures


def hypothesis_phase(scale: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        report = tmp.name
    env = dict(
        os.environ,
        DANCE_FUZZ_EXAMPLES=str(scale),
        DANCE_FUZZ_REPORT=report,
        HYPOTHESIS_PROFILE="fuzz",  # new random examples even where CI fixes them
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/fuzz", "-q", "-p", "no:cacheprovider", "-x"],
        cwd=ROOT,
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - start
    try:
        data = json.loads(Path(report).read_text() or "{}")
    except (OSError, ValueError):
        data = {}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(report)
    return {**data, "rc": proc.returncode, "wall": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the per-door plan")
    parser.add_argument(
        "--hypothesis",
        type=float,
        default=10.0,
        help="DANCE_FUZZ_EXAMPLES for the hypothesis phase (0: skip it)",
    )
    parser.add_argument("--doors", default=",".join(PLAN), help="comma-separated doors")
    parser.add_argument("--seconds", type=float, default=3300.0, help="stop the loops after this")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"fuzz_long: seed {seed}, scale {args.scale}, hypothesis x{args.hypothesis}", flush=True)
    started = time.monotonic()
    rows: list[tuple[str, int, float]] = []
    bad = 0
    if args.hypothesis > 0:
        result = hypothesis_phase(args.hypothesis)
        counts, seconds = result.get("counts", {}), result.get("seconds", {})
        for door in sorted(counts):
            rows.append((f"hypothesis:{door}", int(counts[door]), float(seconds.get(door, 0.0))))
        print(f"hypothesis phase: rc={result['rc']} in {result['wall']:.0f} s", flush=True)
        bad += result["rc"] != 0
    deadline = started + args.seconds
    rng = random.Random(seed)
    logging.disable(logging.WARNING)  # refusals are logged at WARNING; failures are caught
    jose_one: Callable[[], None] | None = None
    cose_one: Callable[[], None] | None = None
    for door in [d.strip() for d in args.doors.split(",") if d.strip()]:
        count = int(PLAN[door] * args.scale)
        contexts: contextlib.ExitStack = contextlib.ExitStack()
        with contexts:
            one: Callable[[], None] | None
            if door == "dns":
                logging.disable(logging.NOTSET)
                gen = door_dns(rng)
                one = next(gen)
                contexts.callback(gen.close)
            elif door in ("jose", "cose"):
                if jose_one is None or cose_one is None:
                    jose_one, cose_one = _message_doors(rng)
                one = jose_one if door == "jose" else cose_one
            elif door == "smtp":
                one = door_smtp(rng)
                if one is None:
                    print("smtp: the sans-I/O SMTP reader is not in this tree: skipped", flush=True)
                    continue
            else:
                one = {
                    "clientid": door_clientid,
                    "proxyv2": door_proxyv2,
                    "http": door_http,
                    "cbor": door_cbor,
                }[door](rng)
            done, seconds, failures = run_door(door, one, count, deadline)
            if door == "dns":
                logging.disable(logging.WARNING)
        rows.append((door, done, seconds))
        print(
            f"{door:10s} {done:>10,d} inputs {seconds:8.1f} s {done / max(seconds, 1e-9):10,.0f}/s",
            flush=True,
        )
        for failure in failures:
            bad += 1
            print(f"  FAILURE {door}: {failure}", flush=True)
    total = sum(n for _, n, _ in rows)
    elapsed = time.monotonic() - started
    print("-" * 60)
    for door, n, seconds in rows:
        print(f"{door:22s} {n:>10,d} inputs {seconds:8.1f} s {n / max(seconds, 1e-9):10,.0f}/s")
    print(f"{'total':22s} {total:>10,d} inputs in {elapsed:.0f} s wall clock (seed {seed})")
    print("result:", "FAILURES" if bad else "no failure")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
