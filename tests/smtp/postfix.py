"""A private Postfix instance for the tests: its own config directory, queue and data directories,
smtpd on a free loopback port, and a mail log file (no syslog needed).

The instance trusts XCLIENT from 127.0.0.0/8, relays only for SASL-authenticated sessions
(``permit_sasl_authenticated, reject_unauth_destination``), discards mail for ``relay.test`` and
the local domain ``local.test``. ``smtpd_sasl_auth_enable = yes`` is needed for XCLIENT LOGIN to
set ``sasl_username`` (Postfix honours LOGIN only when SASL is active; with Cyrus and no
password database, no client can AUTH directly).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.integration.servers import free_port

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = postfix
myhostname = backend.example.test
mydomain = example.test
myorigin = $myhostname
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination = local.test
mynetworks = 127.0.0.0/8
local_recipient_maps =
local_transport = discard:
alias_maps =
alias_database =
transport_maps = inline:{{relay.test=discard:, box.test=virtual:}}
virtual_mailbox_base = {d}/mail
virtual_mailbox_domains =
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtpd_sasl_authenticated_header = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_sasl_auth_enable = yes
maillog_file_prefixes = {d}
maillog_file = {d}/maillog
smtputf8_enable = no
biff = no
"""

# defence in depth (Postfix >= 3.5.23/3.6.13/3.7.9/3.8.4): refuse bare LF from the proxy too; the
# default exclusions ($mynetworks, which holds 127.0.0.0/8) would exempt the proxy
FORBID_BARE_NEWLINE = """\
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
"""


@dataclass
class Postfix:
    dir: Path
    port: int
    postfix: str

    forbid_bare_newline: bool = False

    @property
    def mailbox(self) -> Path:
        """The Maildir that receives mail for ``box.test`` (relayed, so SASL is needed)."""
        return self.dir / "mail" / "box" / "new"

    def delivered(self) -> list[bytes]:
        try:
            return [f.read_bytes() for f in sorted(self.mailbox.iterdir())]
        except FileNotFoundError:
            return []

    @property
    def maillog(self) -> Path:
        return self.dir / "maillog"

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        """The mail log once it contains ``needle`` (postlogd writes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


def _ready(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.settimeout(2)
            if s.recv(100).startswith(b"220"):
                return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def postfix_instance(postfix: str, *, forbid_bare_newline: bool = False) -> Iterator[Postfix]:
    """Start a private Postfix (root only: it chowns its directories to the postfix user).
    Mail for ``relay.test`` is discarded, mail for ``box.test`` lands in :attr:`Postfix.mailbox`
    (both need SASL to relay); ``forbid_bare_newline`` adds :data:`FORBID_BARE_NEWLINE`."""
    d = Path(tempfile.mkdtemp(prefix="dance-postfix-"))
    os.chmod(d, 0o755)
    try:
        for sub in ("conf", "queue", "data", "mail"):
            (d / sub).mkdir()
        shutil.chown(d / "data", user="postfix")
        shutil.chown(d / "mail", user="postfix", group="postfix")
        port = free_port()
        owner = pwd.getpwnam("postfix")
        main_cf = MAIN_CF.format(d=d, uid=owner.pw_uid, gid=owner.pw_gid)
        if forbid_bare_newline:
            main_cf += FORBID_BARE_NEWLINE
        (d / "conf" / "main.cf").write_text(main_cf)
        (d / "conf" / "master.cf").write_text(MASTER_CF.format(port=port))
        conf = str(d / "conf")
        started = subprocess.run(
            [postfix, "-c", conf, "start"], capture_output=True, text=True, timeout=30
        )
        instance = Postfix(d, port, postfix, forbid_bare_newline)
        try:
            if started.returncode != 0 or not _ready(port, 10):
                raise RuntimeError(
                    f"postfix did not start ({started.returncode}): {started.stderr.strip()} "
                    f"{instance.log_text()[-2000:]}"
                )
            yield instance
        finally:
            stopped = subprocess.run([postfix, "-c", conf, "stop"], capture_output=True, timeout=30)
            pid_file = d / "queue" / "pid" / "master.pid"
            if stopped.returncode != 0 and pid_file.exists():  # our master only, by its pid
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
    finally:
        shutil.rmtree(d, ignore_errors=True)
