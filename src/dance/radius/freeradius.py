"""A FreeRADIUS 3 configuration for the RADIUS server behind ``dance radsec-proxy`` (tests, the
demo, and a starting point for operators): UDP on loopback, one client (the proxy) with the
loopback secret, the DANCE dictionary, and a policy that reads the authenticated ClientName.

The policy accepts a request only when ``DANCE-Client-Name`` (added by the proxy) is present
and inside ``allowed_suffix``; it then authenticates the user with PAP against ``users`` (a dict
user -> password) and puts the ClientName in a Reply-Message, so that a client can see what the
server saw. Every request's attributes are written to ``detail`` (one block per packet).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DICTIONARY", "freeradius_config"]

DICTIONARY = """\
# dance radsec-proxy: the authenticated ClientName (RFC 5612 documentation enterprise number)
VENDOR\t\tDANCE-Example\t\t32473
BEGIN-VENDOR\tDANCE-Example
ATTRIBUTE\tDANCE-Client-Name\t1\tstring
END-VENDOR\tDANCE-Example
"""


def _quote(text: str) -> str:
    if any(c in text for c in "\"\\\n\r'`$%{}") or not text.isprintable():
        raise ValueError(f"unusable in a FreeRADIUS configuration: {text!r}")
    return f'"{text}"'


def freeradius_config(
    directory: str | Path,
    port: int,
    secret: str,
    *,
    users: dict[str, str],
    allowed_suffix: str,
    host: str = "127.0.0.1",
) -> Path:
    """Write ``radiusd.conf`` and its dictionary into ``directory``; returns the directory (for
    ``freeradius -d``). Authentication on UDP ``port``, accounting on ``port + 1``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "dictionary").write_text(DICTIONARY)
    users_text = "".join(
        f"{_quote(user)} Cleartext-Password := {_quote(password)}\n"
        for user, password in sorted(users.items())
    )
    (d / "users").write_text(users_text)
    suffix = allowed_suffix.lstrip(".").replace(".", "\\.")
    if not suffix.replace("\\", "").replace(".", "").replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"unusable suffix: {allowed_suffix!r}")
    conf = f"""\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {d}
sbindir = /usr/sbin
logdir = {d}
raddbdir = {d}
radacctdir = {d}
name = freeradius
confdir = {d}
modconfdir = {d}
run_dir = {d}
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/radiusd.pid
max_request_time = 30
cleanup_delay = 1
max_requests = 4096
hostname_lookups = no
log {{
    destination = files
    file = {d}/radius.log
    auth = yes
    auth_badpass = no
    auth_goodpass = no
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = yes
}}
thread pool {{
    start_servers = 2
    max_servers = 4
    min_spare_servers = 1
    max_spare_servers = 4
    max_requests_per_server = 0
}}
client dance {{
    ipaddr = {host}
    secret = {_quote(secret)}
    require_message_authenticator = no
    nas_type = other
}}
modules {{
    always reject {{
        rcode = reject
    }}
    always ok {{
        rcode = ok
    }}
    pap {{
        normalise = no
    }}
    files {{
        filename = {d}/users
    }}
    detail {{
        filename = {d}/detail
        permissions = 0600
        header = "%t"
        locking = no
    }}
}}
server default {{
    listen {{
        type = auth
        ipaddr = {host}
        port = {port}
    }}
    listen {{
        type = acct
        ipaddr = {host}
        port = {port + 1}
    }}
    authorize {{
        detail
        if (!&DANCE-Client-Name) {{
            update reply {{
                Reply-Message := "no DANCE identity"
            }}
            reject
        }}
        if (&DANCE-Client-Name !~ /(^|\\.){suffix}$/) {{
            update reply {{
                Reply-Message := "client %{{DANCE-Client-Name}} not allowed"
            }}
            reject
        }}
        files
        pap
        update reply {{
            Reply-Message := "client %{{DANCE-Client-Name}}"
        }}
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
    }}
    preacct {{
    }}
    accounting {{
        detail
    }}
    post-auth {{
        Post-Auth-Type REJECT {{
            ok
        }}
    }}
}}
"""
    (d / "radiusd.conf").write_text(conf)
    return d
