r"""``dance-eap-verify``: the command FreeRADIUS's EAP-TLS ``verify`` section runs per certificate.

It reads the client certificate FreeRADIUS wrote (PEM, ``%{TLS-Client-Cert-Filename}``), asks
the verify daemon (``dance eap-verify-daemon``) over its Unix socket and exits 0 only when the
daemon authenticated it; it imports nothing but the standard library, so a check costs little
more than starting Python (bench/bench_eap.py measures it). Every other outcome exits non-zero
and FreeRADIUS refuses the handshake: a refusal (1), no daemon or a malformed exchange (1),
unusable arguments (2). The reason goes to stderr, which ``freeradius -X`` shows.

mods-enabled/eap, in ``tls-config`` (the ``client`` value on one line in the file)::

    verify {
        tmpdir = /var/lib/freeradius/dance-tmp
        client = "/opt/dance/bin/dance-eap-verify --socket /run/dance/eap.sock \
                  --identity %{User-Name} %{TLS-Client-Cert-Filename}"
    }
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run as a file: python3 -I -S .../eap_hook.py
    import os.path

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from dance.eap.client import ask
from dance.eap.protocol import ProtocolError, pem_body

USAGE = "usage: dance-eap-verify --socket PATH [--identity EAP-IDENTITY] CERTFILE"
MAX_FILE = 65536


def _parse(argv: list[str]) -> tuple[str, str | None, str] | None:
    sock: str | None = None
    identity: str | None = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--socket", "--identity") and i + 1 < len(argv):
            if arg == "--socket":
                sock = argv[i + 1]
            else:
                identity = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--socket="):
            sock = arg.split("=", 1)[1]
        elif arg.startswith("--identity="):
            identity = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            return None
        else:
            rest.append(arg)
        i += 1
    if not sock or len(rest) != 1:
        return None
    return sock, identity, rest[0]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parsed = _parse(args)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return 2
    path, identity, certfile = parsed
    try:
        with open(certfile, "rb") as f:
            data = f.read(MAX_FILE + 1)
        if len(data) > MAX_FILE:
            raise ProtocolError("certificate file too large")
        body = pem_body(data.decode("ascii"))
        # FreeRADIUS expands a missing User-Name to "": the daemon decides what no identity means
        kind, text = ask(path, identity or None, body)
    except (ProtocolError, UnicodeDecodeError) as exc:
        print(f"dance-eap-verify: refused: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"dance-eap-verify: refused: no answer from the verify daemon at {path} "
            f"({exc.strerror or exc})",
            file=sys.stderr,
        )
        return 1
    if kind == "OK":
        print(f"dance-eap-verify: authenticated as {text}", file=sys.stderr)
        return 0
    if kind == "NO":
        print(f"dance-eap-verify: refused: {text}", file=sys.stderr)
    else:
        print(f"dance-eap-verify: refused, the daemon could not decide: {text}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
