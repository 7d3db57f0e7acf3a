"""A real OpenLDAP slapd (Debian ``slapd``) behind ``dance ldap-proxy``, for tests and the demo.

slapd listens on an ldapi (Unix) socket in a directory of its own, with an mdb database loaded by
``slapadd`` from an LDIF. The configuration written by `slapd_conf` is the one docs/ldap.md
describes: the front's peer credentials (its uid and gid on the ldapi socket) map to the proxy's
entry, whose ``authzTo`` lets it act for the people of one domain only, and the SASL EXTERNAL
authzid ``u:UID@DOMAIN`` that the front asserts maps to ``uid=UID,ou=people,BASE``.

    d = Path(tmp)
    with Slapd(d, slapd_conf(d, base=BASE, domain="example.test", proxy_dn=PROXY),
               directory_ldif(BASE, PROXY, [person("alice")])) as slapd:
        config = LDAPProxyConfig(str(slapd.socket))
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dance.testkit import servers

__all__ = ["DEFAULT_ACCESS", "Slapd", "directory_ldif", "person", "slapd_conf"]

# people read their own entry; the proxy's authzTo is readable only to authenticate with it
DEFAULT_ACCESS = """access to attrs=authzTo by * auth
access to dn.subtree="ou=people,{base}" by self read by * none
access to * by * read
"""


def _regex_literal(text: str) -> str:
    """``text`` as a POSIX regex literal inside a quoted slapd.conf value (``.`` -> ``\\\\.``)."""
    out = ""
    for c in text:
        if not (c.isalnum() or c in "-_"):
            out += "\\\\" + c
        else:
            out += c
    return out


def slapd_conf(
    d: Path, *, base: str, domain: str, proxy_dn: str, access: str = DEFAULT_ACCESS
) -> str:
    """slapd.conf: the peer credentials of this process's uid/gid on the ldapi socket are
    ``proxy_dn``; ``u:UID@domain`` is ``uid=UID,ou=people,base``; ``access``: the ACL lines
    (``{base}`` is replaced)."""
    uid, gid = os.getuid(), os.getgid()
    return f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
authz-policy to
authz-regexp "^gidNumber={gid}\\\\+uidNumber={uid},cn=peercred,cn=external,cn=auth$" "{proxy_dn}"
authz-regexp "^uid=([^,@]+)@{_regex_literal(domain)},cn=external,cn=auth$" "uid=$1,ou=people,{base}"
database mdb
suffix "{base}"
rootdn "cn=admin,{base}"
directory {d}/db
maxsize 10485760
{access.replace("{base}", base)}"""


def person(uid: str, extra: str = "") -> str:
    """An ``inetOrgPerson`` entry's attribute lines (``extra``: more lines, e.g. ``authzTo``)."""
    lines = f"objectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\nsn: {uid[:1].upper()}\n"
    return lines + extra


def directory_ldif(base: str, proxy_dn: str, people: Sequence[str]) -> str:
    """The base entry (``dc=...`` first), the proxy's entry (``authzTo`` the people under
    ``ou=people,base``), ``ou=people`` and one entry per `person`, as an LDIF for slapadd."""
    dc = base.split(",", maxsplit=1)[0].split("=", 1)[1]
    cn = proxy_dn.split(",", maxsplit=1)[0].split("=", 1)[1]
    text = (
        f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\no: {dc}\ndc: {dc}\n\n"
        f"dn: {proxy_dn}\nobjectClass: applicationProcess\ncn: {cn}\n"
        f"authzTo: dn.regex:^uid=[^,]+,ou=people,{base}$\n\n"
        f"dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n"
    )
    for entry in people:
        uid = next(line[5:] for line in entry.splitlines() if line.startswith("uid: "))
        text += f"\ndn: uid={uid},ou=people,{base}\n{entry}"
    return text


@dataclass
class Slapd:
    """slapd on ``directory/ldapi`` with ``conf`` (slapd.conf) and the entries in ``ldif``;
    ``with`` (or `start`) loads the database and starts it, `stop` ends it."""

    directory: Path
    conf: str
    ldif: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.directory / "ldapi"

    @property
    def uri(self) -> str:
        return "ldapi://" + str(self.socket).replace("/", "%2F")

    @property
    def dir(self) -> Path:
        return self.directory

    def log(self) -> str:
        try:
            return (self.directory / "slapd.log").read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        binary = servers.BINARY_FINDER("slapd")
        slapadd = servers.BINARY_FINDER("slapadd")
        d = self.directory
        (d / "db").mkdir(parents=True, exist_ok=True)
        (d / "slapd.conf").write_text(self.conf)
        (d / "base.ldif").write_text(self.ldif)
        loaded = subprocess.run(
            [slapadd, "-f", str(d / "slapd.conf"), "-l", str(d / "base.ldif")],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        if loaded.returncode != 0:
            raise RuntimeError(f"slapadd failed ({loaded.returncode}): {loaded.stderr[-2000:]}")
        with (d / "slapd.log").open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "-f", str(d / "slapd.conf"), "-h", self.uri, "-d", "256"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slapd did not start: {self.log()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
