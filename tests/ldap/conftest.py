"""A real slapd (Debian ``slapd``) on an ldapi socket in a temp dir, a signed zone publishing user
CAs at ``_user.<domain>``, and the DANCE LDAP front in a thread (LDAPS and StartTLS)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dance import certs, make_record
from dance.auth import Authenticator
from dance.dns import TLSAResolver, TrustAnchors
from dance.ldap import LDAPProxy, LDAPProxyConfig, start_ldap_proxy
from dance.testkit import Hierarchy
from dance.testkit.slapd import Slapd, directory_ldif, person, slapd_conf
from tests.conftest import require_binary
from tests.pki import key
from tests.threads import serve_in_thread
from tests.tls.common import NOW
from tests.worlds import Files, loopback_resolver, serve_signed, write_files

DOMAIN = "example.test"  # slapd lets the proxy act for this domain's users only
OTHER = "other.test"  # a domain DANCE authenticates, slapd's authzTo does not cover
UNPUBLISHED = "gone.test"  # its user CA record was removed: none in the signed zone
OUTSIDE = "outside.test"  # published, not in the front's allow-list
ALLOW = [f"_user.{DOMAIN}", f"_user.{OTHER}", f"_user.{UNPUBLISHED}"]
BASE = "dc=example,dc=test"
PROXY_DN = f"cn=dance-proxy,{BASE}"


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE}"


CAROL_READS = f'by dn.exact="{user_dn("carol")}" read'
ACCESS = f"""access to attrs=authzTo by * auth
access to dn.subtree="ou=people,{{base}}" by self read {CAROL_READS} by * none
access to * by * read
"""  # people read their own entry, carol everyone's

PEOPLE = [
    person("alice", f"mail: alice@{DOMAIN}\nauthzTo: dn.exact:{user_dn('bob')}\n"),
    person("bob", f"mail: bob@{DOMAIN}\n"),
    person("carol", f"mail: carol@{DOMAIN}\n"),
]


@pytest.fixture(scope="package")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """slapd (dance.testkit.slapd): the proxy's peer credentials map to PROXY_DN, whose authzTo
    covers the people of BASE only; u:uid@example.test maps to uid=uid,ou=people,BASE."""
    require_binary("slapd")
    require_binary("slapadd")
    d = tmp_path_factory.mktemp("slapd")
    conf = slapd_conf(d, base=BASE, domain=DOMAIN, proxy_dn=PROXY_DN, access=ACCESS)
    server = Slapd(d, conf, directory_ldif(BASE, PROXY_DN, PEOPLE))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Users:
    dir: Path
    dns: tuple[str, int]
    anchors: TrustAnchors
    anchor_file: str
    ca: str  # the server's CA
    server: Files
    alice: Files
    bob: Files
    carol: Files
    other: Files  # dave@other.test
    impostor: Files  # alice@example.test, issued by a CA not in DNS
    gone: Files  # erin@gone.test, whose user CA record was removed
    outside: Files  # frank@outside.test, published but not allowed


@pytest.fixture(scope="package")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    d = tmp_path_factory.mktemp("ldap-users")
    server_ca_key = key(0)
    server_ca = certs.new_ca(server_ca_key, "LDAP test server CA", now=NOW)
    server_key = key(1)
    server_cert = certs.issue_certificate(
        server_ca, server_ca_key, server_key.public_key(), dns_names=["localhost"], now=NOW,
        client_auth=False, server_auth=True,
    )  # fmt: skip
    (d / "ca.pem").write_bytes(certs.certificate_pem(server_ca))
    cas = {}
    for i, domain in enumerate([DOMAIN, OTHER, UNPUBLISHED, OUTSIDE, "rogue.test"]):
        cas[domain] = (certs.new_ca(key(10 + i), f"{domain} users", now=NOW), key(10 + i))

    def user(label: str, uid: str, domain: str, ca_domain: str, k: int) -> Files:
        ca, ca_key = cas[ca_domain]
        cert = certs.issue_certificate(
            ca, ca_key, key(k).public_key(), dns_names=[domain], uid=uid, now=NOW
        )
        return write_files(d, label, cert, key(k), ca)

    zones = Hierarchy("test.", ttl=60)
    for domain in (DOMAIN, OTHER, UNPUBLISHED, OUTSIDE):
        zone = zones.child(f"{domain}.")
        if domain != UNPUBLISHED:
            zone.add("_user", "TLSA", make_record(cas[domain][0], 2, 0, 1).to_text())
    with serve_signed(zones, d) as signed:
        yield Users(
            dir=d,
            dns=signed.dns,
            anchors=signed.anchors,
            anchor_file=signed.anchor_file,
            ca=str(d / "ca.pem"),
            server=write_files(d, "server", server_cert, server_key),
            alice=user("alice", "alice", DOMAIN, DOMAIN, 2),
            bob=user("bob", "bob", DOMAIN, DOMAIN, 3),
            carol=user("carol", "carol", DOMAIN, DOMAIN, 4),
            other=user("dave", "dave", OTHER, OTHER, 5),
            impostor=user("impostor", "alice", DOMAIN, "rogue.test", 6),
            gone=user("erin", "erin", UNPUBLISHED, UNPUBLISHED, 7),
            outside=user("frank", "frank", OUTSIDE, OUTSIDE, 8),
        )


def resolver(u: Users) -> TLSAResolver:
    return loopback_resolver(u.dns, u.anchors)


@dataclass
class Front:
    proxy: LDAPProxy
    loop: asyncio.AbstractEventLoop

    @property
    def ldaps(self) -> int:
        return self.proxy.core.port

    @property
    def starttls(self) -> int:
        return self.proxy.starttls_port

    def stats(self) -> dict[str, int]:
        return dict(self.proxy.stats.refused)


@pytest.fixture(scope="package")
def front(users: Users, slapd: Slapd) -> Iterator[Front]:
    @contextlib.asynccontextmanager
    async def serve(loop: asyncio.AbstractEventLoop) -> AsyncIterator[Front]:
        async with resolver(users) as res:
            proxy = await start_ldap_proxy(
                "127.0.0.1",
                ldaps_port=0,
                starttls_port=0,
                config=LDAPProxyConfig(str(slapd.socket), bind_timeout=5.0),
                cert=users.server.cert,
                key=users.server.key,
                authenticator=Authenticator(res, allow=ALLOW),
            )
            yield Front(proxy, loop)
            await proxy.shutdown(0)

    yield from serve_in_thread(serve, "the LDAP front")
