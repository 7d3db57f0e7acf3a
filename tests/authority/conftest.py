"""Fixtures for the embedded authority tests: a zone directory, a TSIG key, a running server.

The zone directory and its constants come from the test kit (dance.testkit.authority), so
that bench/bench_authority.py uses the same ones without importing the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.update
import pytest

from dance.authority import Authority, Limits, TSIGKey, generate_tsig_key
from dance.dns import LookupResult, TLSAResolver, TrustAnchors
from dance.testkit.authority import H1, H2, ZONE, make_zone_dir

__all__ = ["H1", "H2", "ZONE", "Env", "make_zone_dir", "rcode"]


@dataclass
class Env:
    zone_dir: Path
    key: TSIGKey
    anchor: str
    authority: Authority

    @property
    def port(self) -> int:
        return self.authority.port

    def update(self, key: TSIGKey | None = None) -> dns.update.UpdateMessage:
        use = key or self.key
        return dns.update.UpdateMessage(
            ZONE, keyring={use.dns_name: use.to_dnspython()}, keyname=use.dns_name
        )

    def send(self, message: dns.message.Message) -> dns.message.Message:
        return dns.query.tcp(message, "127.0.0.1", port=self.port, timeout=5)

    def lookup(self, name: str, rdtype: str = "TLSA") -> LookupResult:
        resolver = TLSAResolver(
            ("127.0.0.1", self.port),
            anchors=TrustAnchors.from_text(self.anchor),
            recursion_desired=False,
        )

        async def run() -> LookupResult:
            async with resolver:
                return await resolver.lookup(name, rdtype)

        return asyncio.run(run())

    def zone_text(self) -> str:
        return (self.zone_dir / "example.test.zone").read_text()


@pytest.fixture(params=["nsec", "nsec3"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    zone_dir, anchor = make_zone_dir(tmp_path, request.param)
    key = generate_tsig_key("dance-update")
    authority = Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start()
    try:
        yield Env(zone_dir, key, anchor, authority)
    finally:
        authority.stop()


@pytest.fixture
def nsec_env(tmp_path: Path) -> Iterator[Env]:
    zone_dir, anchor = make_zone_dir(tmp_path, "nsec")
    key = generate_tsig_key("dance-update")
    authority = Authority(zone_dir, tsig_keys=[key], limits=Limits(rate=0)).start()
    try:
        yield Env(zone_dir, key, anchor, authority)
    finally:
        authority.stop()


def rcode(response: dns.message.Message) -> str:
    return dns.rcode.to_text(response.rcode())
