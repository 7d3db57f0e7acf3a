"""dance.dns against the project's DNSSEC test kit (dance.testkit): the spec's DNS cases (TC-D2 to
TC-D9) over real loopback sockets, with the kit's fault injection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dance.dns import LookupResult, Outcome, Reason, TLSAResolver, TrustAnchors

testkit = pytest.importorskip("dance.testkit")

NOW = 1_800_000_000


@dataclass
class Kit:
    hierarchy: object
    server: object
    anchors: TrustAnchors

    def resolver(self, **kw: object) -> TLSAResolver:
        kw.setdefault("timeout", 1.0)
        kw.setdefault("deadline", 3.0)
        return TLSAResolver(
            self.server.address,  # type: ignore[attr-defined]
            anchors=self.anchors,
            clock=lambda: NOW,
            recursion_desired=False,
            **kw,  # type: ignore[arg-type]
        )

    def lookup(self, name: str, **kw: object) -> LookupResult:
        async def go() -> LookupResult:
            async with self.resolver(**kw) as r:
                return await r.lookup_tlsa(name)

        return asyncio.run(go())


@pytest.fixture(scope="module", params=["nsec", "nsec3"])
def kit(request: pytest.FixtureRequest) -> Iterator[Kit]:
    h = testkit.dance_example(request.param, now=NOW)
    anchors = TrustAnchors.from_text(h.export_trust_anchor())
    with testkit.ServerThread(h) as server:
        yield Kit(h, server, anchors)


EXPECTED = {
    "sensor7._device.example.test": (Outcome.SECURE, Reason.OK),
    "any-name.wild._device.example.test": (Outcome.SECURE, Reason.OK),  # TC-D7
    "revoked._device.example.test": (Outcome.SECURE_ABSENT, Reason.NXDOMAIN),  # TC-D2
    "sensor7._device.insecure.example.test": (Outcome.INSECURE, None),  # TC-D3
    "moved._device.example.test": (Outcome.SECURE, Reason.OK),  # TC-D9 (CNAME)
    "outside.example.test": (Outcome.SECURE, Reason.OK),  # CNAME across a zone cut
    "x.wildcname._device.example.test": (Outcome.SECURE, Reason.OK),  # wildcard CNAME
    "dangling.example.test": (Outcome.SECURE_ABSENT, Reason.NXDOMAIN),
    "www.example.test": (Outcome.SECURE_ABSENT, Reason.NODATA),
    "b.c.example.test": (Outcome.SECURE_ABSENT, Reason.NODATA),  # empty non-terminal
    "host.elsewhere.example.test": (Outcome.INSECURE, Reason.UNSIGNED_DELEGATION),
}


def test_expected_outcomes(kit: Kit) -> None:
    async def go() -> dict[str, LookupResult]:
        async with kit.resolver() as r:
            return {name: await r.lookup_tlsa(name) for name in EXPECTED}

    results = asyncio.run(go())
    for name, (outcome, reason) in EXPECTED.items():
        got = results[name]
        assert got.outcome is outcome, (name, got)
        if reason is not None:
            assert got.reason == reason, (name, got)
        assert got.authenticates == (outcome is Outcome.SECURE)


@pytest.mark.parametrize(
    ("fault", "name", "outcome", "reason"),
    [
        ("bad-signature", "sensor7._device.example.test", Outcome.BOGUS, Reason.BAD_SIGNATURE),
        ("expired-rrsig", "sensor7._device.example.test", Outcome.BOGUS, None),
        ("stripped-rrsig", "sensor7._device.example.test", Outcome.BOGUS, Reason.NO_SIGNATURE),
        ("stripped-denial", "revoked._device.example.test", Outcome.BOGUS, None),
        (
            "stripped-denial",
            "any-name.wild._device.example.test",  # TC-D8
            Outcome.BOGUS,
            Reason.BAD_WILDCARD,
        ),
        ("wrong-ds", "_device.example.test", Outcome.BOGUS, Reason.NO_DS_MATCH),
        ("missing-ds", "_device.example.test", Outcome.INSECURE, None),
        ("wrong-id", "sensor7._device.example.test", Outcome.INDETERMINATE, None),
        ("wrong-question", "sensor7._device.example.test", Outcome.INDETERMINATE, None),
        ("truncated", "sensor7._device.example.test", Outcome.INDETERMINATE, None),
        ("malformed", "sensor7._device.example.test", Outcome.INDETERMINATE, None),
        ("silent", "sensor7._device.example.test", Outcome.INDETERMINATE, Reason.TIMEOUT),
        ("force-tc", "sensor7._device.example.test", Outcome.SECURE, Reason.OK),
    ],
)
def test_faults(kit: Kit, fault: str, name: str, outcome: Outcome, reason: str | None) -> None:
    target = "sensor7._device.example.test" if name == "_device.example.test" else name
    with kit.hierarchy.inject(testkit.Fault(fault, name)):  # type: ignore[attr-defined]
        got = kit.lookup(target, timeout=0.3, deadline=1.0)
    assert got.outcome is outcome, got
    if reason is not None:
        assert got.reason == reason, got
    # and once the fault is gone, the name validates again
    assert kit.lookup(target).outcome is EXPECTED.get(target, (Outcome.SECURE,))[0]


def test_slow_server_deadline(kit: Kit) -> None:
    fault = testkit.Fault("slow", "sensor7._device.example.test", delay=2.0)
    with kit.hierarchy.inject(fault):  # type: ignore[attr-defined]

        async def go() -> tuple[LookupResult, LookupResult]:
            async with kit.resolver(timeout=5, deadline=0.5) as r:
                slow, fast = await asyncio.gather(
                    r.lookup_tlsa("sensor7._device.example.test"),
                    r.lookup_tlsa("moved._device.example.test"),
                )
                return slow, fast

        slow, fast = asyncio.run(go())
    assert slow.outcome is Outcome.INDETERMINATE
    assert slow.reason == Reason.TIMEOUT
    assert fast.outcome is Outcome.SECURE
