"""A real FreeRADIUS (EAP-TLS) and ``eapol_test`` (the 802.1X supplicant) on loopback, for tests.

`FreeRadius` writes a minimal configuration into a directory of its own (one ``eap`` module doing
EAP-TLS only, one client 127.0.0.1, one ``listen`` on a free UDP port), starts ``freeradius -X
-d DIR`` (``-f``, debug log to a file) and stops it. Its ``verify { client = ... }`` hook is the
command given as ``verify_command`` (a list of arguments; ``%{TLS-Client-Cert-Filename}`` and
``%{User-Name}`` are FreeRADIUS expansions done per argument, never through a shell).

`eapol_test` runs one authentication with a client certificate and returns what it saw:
the verdict, the RADIUS packets (count and bytes) and the EAP-TLS message bytes, counted from
eapol_test's own debug output (``-d``: it prints every RADIUS message it sends and receives).

FreeRADIUS 3.2 runs OpenSSL's chain check before the ``verify`` hook (``cbtls_verify`` returns at
the first OpenSSL error), so a client certificate must chain to ``ca_file`` (which FreeRADIUS
loads with ``X509_V_FLAG_PARTIAL_CHAIN``: a self-signed leaf listed there is accepted as is).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dance.testkit import servers

__all__ = ["EapolResult", "FreeRadius", "eapol_test"]

SECRET = "dance-eap-test"  # noqa: S105 - the RADIUS shared secret of a loopback test server


RADIUSD_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {dir}
sbindir = /usr/sbin
logdir = {dir}/log
raddbdir = {dir}
radacctdir = {dir}/acct
name = freeradius
confdir = {dir}
modconfdir = {dir}/mods-config
certdir = {dir}/certs
cadir = {dir}/certs
run_dir = {dir}/run
db_dir = {dir}
libdir = /usr/lib/freeradius
pidfile = {dir}/run/freeradius.pid
max_request_time = 30
cleanup_delay = 0
max_requests = 4096
hostname_lookups = no
log {{
    destination = files
    file = {dir}/log/radius.log
    colourise = no
    auth = yes
    auth_badpass = no
    auth_goodpass = no
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = no
    allow_vulnerable_openssl = yes
}}
thread pool {{
    start_servers = 2
    max_servers = 4
    min_spare_servers = 1
    max_spare_servers = 4
    max_requests_per_server = 0
    auto_limit_acct = no
}}
client localhost {{
    ipaddr = 127.0.0.1
    secret = {secret}
    require_message_authenticator = no
    nas_type = other
}}
modules {{
    eap {{
        default_eap_type = tls
        timer_expire = 60
        ignore_unknown_eap_types = no
        max_sessions = 256
        tls-config tls-common {{
            private_key_file = {dir}/certs/server.key
            certificate_file = {dir}/certs/server.pem
            ca_file = {dir}/certs/clients-ca.pem
            fragment_size = {fragment_size}
            tls_min_version = "1.2"
            tls_max_version = "{tls_max}"
            cipher_list = "DEFAULT"
            ecdh_curve = ""
            cache {{
                enable = no
            }}
{verify}
        }}
        tls {{
            tls = tls-common
{tls_extra}
        }}
    }}
{modules_extra}
}}
instantiate {{
}}
server default {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {port}
    }}
    authorize {{
        eap {{
            ok = return
        }}
    }}
    authenticate {{
        eap
    }}
    post-auth {{
        Post-Auth-Type REJECT {{
            eap
        }}
    }}
}}
{servers_extra}
"""


@dataclass
class FreeRadius:
    """A FreeRADIUS EAP-TLS server in ``directory`` (created if missing); ``with`` starts it."""

    directory: Path
    server_cert_pem: bytes
    server_key_pem: bytes
    client_ca_pem: bytes
    verify_command: Sequence[str] | None = None
    fragment_size: int = 1024
    tls_max: str = "1.2"
    port: int = 0
    # raw configuration text: inside the eap module's ``tls { }`` (e.g. ``virtual_server = X``),
    # more modules (e.g. a ``python3 { }`` instance) and more ``server X { }`` sections
    tls_extra: str = ""
    modules_extra: str = ""
    servers_extra: str = ""
    proc: subprocess.Popen[Any] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.directory / "log" / "debug.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def write_config(self) -> None:
        d = self.directory
        for sub in ("log", "run", "certs", "acct", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "tmp").chmod(0o700)
        (d / "certs" / "server.pem").write_bytes(self.server_cert_pem)
        key = d / "certs" / "server.key"
        key.touch(mode=0o600)
        key.write_bytes(self.server_key_pem)
        (d / "certs" / "clients-ca.pem").write_bytes(self.client_ca_pem)
        verify = ""
        if self.verify_command:
            for arg in self.verify_command:
                if not arg or any(c in arg for c in " \t\"'\\"):
                    raise ValueError(f"verify command argument {arg!r}: no spaces or quotes")
            verify = (
                "            verify {\n"
                f"                tmpdir = {d / 'tmp'}\n"
                f'                client = "{" ".join(self.verify_command)}"\n'
                "            }\n"
            )
        if not self.port:
            self.port = servers.free_port()
        (d / "radiusd.conf").write_text(
            RADIUSD_CONF.format(
                dir=d,
                secret=SECRET,
                port=self.port,
                fragment_size=self.fragment_size,
                tls_max=self.tls_max,
                verify=verify,
                tls_extra=self.tls_extra,
                modules_extra=self.modules_extra,
                servers_extra=self.servers_extra,
            )
        )

    def start(self, timeout: float = 30.0) -> None:
        binary = servers.BINARY_FINDER("freeradius", "radiusd")
        self.write_config()
        out = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(
            [binary, "-X", "-f", "-d", str(self.directory), "-n", "radiusd"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while "Ready to process requests" not in self.log_text():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"freeradius exited ({self.proc.returncode}):\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"freeradius did not start:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            servers.stop_process(self.proc)
            self.proc = None
            self._out.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> FreeRadius:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class EapolResult:
    """What one ``eapol_test`` run saw (counted from its debug output)."""

    accepted: bool
    returncode: int
    radius_sent: int  # Access-Request packets
    radius_received: int  # Access-Challenge/Accept/Reject packets
    radius_bytes_sent: int  # RADIUS payload bytes (UDP payload) sent
    radius_bytes_received: int
    eap_bytes_sent: int  # EAP packets carried in EAP-Message attributes
    eap_bytes_received: int
    reply_user_name: str | None
    tls_version: str | None  # as the supplicant's OpenSSL reported it, e.g. "TLSv1.3"
    output: str

    @property
    def round_trips(self) -> int:
        return self.radius_sent


_SENT = re.compile(r"^Encapsulating EAP message into a RADIUS packet$", re.M)
_RADIUS_MSG = re.compile(
    r"^RADIUS message: code=(\d+) \((\S+)\) identifier=(\d+) length=(\d+)$", re.M
)
_EAP_ATTR = re.compile(r"^\s+Attribute 79 \(EAP-Message\) length=(\d+)$", re.M)
_USER_NAME = re.compile(r"^\s+Attribute 1 \(User-Name\) length=\d+\n\s+Value: '([^']*)'$", re.M)


def parse_eapol_output(text: str, returncode: int) -> EapolResult:
    """Count RADIUS messages and EAP bytes in ``eapol_test`` debug output."""
    sent = received = bytes_sent = bytes_received = eap_sent = eap_received = 0
    reply_user: str | None = None
    # eapol_test dumps each RADIUS message it sends ("Sending RADIUS message to authentication
    # server") or receives ("Received RADIUS packet") followed by "RADIUS message: ..." and its
    # attributes; split the output at those dumps.
    blocks = re.split(r"^(?=RADIUS message: )", text, flags=re.M)
    for block in blocks[1:]:
        m = _RADIUS_MSG.match(block)
        if m is None:
            continue
        code, length = int(m.group(1)), int(m.group(4))
        end = block.find("\n\n")
        body = block if end < 0 else block[:end]
        eap = sum(int(x) - 2 for x in _EAP_ATTR.findall(body))
        if code == 1:
            sent += 1
            bytes_sent += length
            eap_sent += eap
        else:
            received += 1
            bytes_received += length
            eap_received += eap
            if code == 2:
                u = _USER_NAME.search(body)
                if u:
                    reply_user = u.group(1)
    accepted = returncode == 0 and re.search(r"^SUCCESS$", text, re.M) is not None
    version = re.search(r"^SSL: Using TLS version (TLSv1\.\d)$", text, re.M)
    return EapolResult(
        accepted=accepted,
        returncode=returncode,
        radius_sent=sent,
        radius_received=received,
        radius_bytes_sent=bytes_sent,
        radius_bytes_received=bytes_received,
        eap_bytes_sent=eap_sent,
        eap_bytes_received=eap_received,
        reply_user_name=reply_user,
        tls_version=version.group(1) if version else None,
        output=text,
    )


def eapol_test(
    server: FreeRadius,
    *,
    identity: str,
    client_cert: Path,
    client_key: Path,
    ca_cert: Path,
    workdir: Path,
    timeout: float = 20.0,
    extra: str = "",
    tls13: bool = False,
) -> EapolResult:
    """One EAP-TLS authentication of ``identity`` with ``client_cert`` (PEM, chain allowed).

    wpa_supplicant leaves TLS 1.3 off for EAP unless told (``tls13``)."""
    if tls13:
        extra += '    phase1="tls_disable_tlsv1_3=0"\n'
    binary = servers.BINARY_FINDER("eapol_test")
    conf = workdir / f"eapol-{os.getpid()}-{time.monotonic_ns()}.conf"
    conf.write_text(
        "network={\n"
        "    key_mgmt=WPA-EAP\n"
        "    eap=TLS\n"
        f'    identity="{identity}"\n'
        f'    ca_cert="{ca_cert}"\n'
        f'    client_cert="{client_cert}"\n'
        f'    private_key="{client_key}"\n'
        "    eapol_flags=0\n"
        f"{extra}"
        "}\n"
    )
    try:
        done = subprocess.run(
            [binary, "-c", str(conf), "-a", "127.0.0.1", "-p", str(server.port), "-s", SECRET,
             "-t", str(int(timeout)), "-n"],
            capture_output=True, text=True, timeout=timeout + 10, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
    finally:
        conf.unlink(missing_ok=True)
    return parse_eapol_output(done.stdout + done.stderr, done.returncode)


def have_binaries() -> bool:
    return bool(
        shutil.which("freeradius", path="/usr/sbin:/usr/bin") and shutil.which("eapol_test")
    )
