"""Differential: what the proxy forwards means the same to FreeRADIUS's own parser. Random
requests (attributes of unassigned types, random octets) go through the front; FreeRADIUS's
detail log must show exactly the attributes the proxy's codec parsed, in order, plus the
identity attribute the proxy added, and nothing a client could not see."""

from __future__ import annotations

import asyncio
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dance.radius import Attribute, RadsecClient, access_request, parse_packet
from tests.radius.conftest import DEVICE, FreeRadius, Front, wait_for
from tests.radius.test_proxy import open_client
from tests.tls.common import World

pytestmark = pytest.mark.integration

# types FreeRADIUS 3.2's dictionaries leave unnamed (it logs them as Attr-N = 0x..)
OPAQUE = st.integers(103, 118)
TAG = 214  # one per packet, to find it in the log (FreeRADIUS logs it as Attr-214)
attribute = st.builds(Attribute, OPAQUE, st.binary(min_size=1, max_size=60))


def _logged(detail: str) -> dict[str, list[tuple[int, str]]]:
    """tag -> the opaque attributes FreeRADIUS decoded, in order, per request."""
    out: dict[str, list[tuple[int, str]]] = {}
    for block in detail.split("\n\n"):
        attrs = re.findall(r"^\s*Attr-(\d+) = 0x([0-9a-f]*)$", block, flags=re.M)
        pairs = [(int(t), v) for t, v in attrs]
        tags = [v for t, v in pairs if t == TAG]
        if len(tags) == 1:
            out[tags[0]] = [(t, v) for t, v in pairs if t != TAG]
        if re.search(r'DANCE-Client-Name = "(?!' + re.escape(DEVICE) + ")", block):
            out["__bad_identity__"] = []
    return out


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(attribute, max_size=10), min_size=5, max_size=12))
def test_forwarded_packets_mean_the_same(
    front: Front, world: World, freeradius: FreeRadius, requests: list[list[Attribute]]
) -> None:
    sent: dict[str, list[tuple[int, str]]] = {}
    raws = []
    for i, attrs in enumerate(requests):
        tag = os.urandom(8)
        raw = access_request(i, "diff", None, extra=[Attribute(TAG, tag), *attrs])
        raws.append(raw)
        parsed = parse_packet(raw)  # what the proxy's codec sees
        sent[tag.hex()] = [
            (a.type, a.value.hex()) for a in parsed.attributes if 103 <= a.type <= 118
        ]

    async def main() -> int:
        client: RadsecClient = await open_client(front.port, world, world.device, DEVICE)
        try:
            await client.send_raw(b"".join(raws))
            answered = 0
            for _ in raws:
                if await client.read_packet(20.0) is None:
                    break
                answered += 1
            return answered
        finally:
            await client.close()

    assert asyncio.run(main()) == len(raws)
    assert wait_for(lambda: set(sent) <= set(_logged(freeradius.detail())))
    logged = _logged(freeradius.detail())
    assert "__bad_identity__" not in logged
    for tag, attrs in sent.items():
        assert logged[tag] == attrs, (tag, attrs, logged[tag])
