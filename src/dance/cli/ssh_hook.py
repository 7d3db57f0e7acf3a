"""``dance-ssh-keys``: the command sshd runs for every key a client offers.

With ``--socket PATH`` it asks the key daemon (``dance ssh-keys-daemon``), whose DNS cache is warm,
and imports nothing but the standard library: a call costs little more than starting Python
(bench/bench_ssh.py measures it). Without ``--socket``, or when no daemon answers there, it does the
whole check in-process (``dance ssh-keys-command``), which is correct but slower.

sshd_config::

    AuthorizedKeysCommand /opt/dance/bin/dance-ssh-keys --socket /run/dance/ssh-keys.sock %u %t %k

The other options of ``dance ssh-keys-command`` may stand there too; the daemon ignores them (it has
its own configuration), the in-process fallback uses them.
"""

from __future__ import annotations

import sys

from dance.ssh.client import ask
from dance.ssh.protocol import ProtocolError


def _socket_option(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--socket" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--socket="):
            return arg.split("=", 1)[1]
    return None


def _without_socket(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--socket" and i + 1 < len(argv):
            skip = True
            continue
        if arg.startswith("--socket="):
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = _socket_option(args)
    rest = _without_socket(args)
    positionals = rest[-3:]
    if path and len(positionals) == 3 and not any(p.startswith("-") for p in positionals):
        user, keytype, blob = positionals
        try:
            kind, text = ask(path, user, keytype, blob)
        except ProtocolError as exc:
            # an offered key we cannot even phrase (or a daemon that speaks nonsense): refuse
            print(f"dance-ssh-keys: refused: {exc}", file=sys.stderr)
            return 0
        except OSError as exc:
            print(
                f"dance-ssh-keys: no key daemon at {path} ({exc.strerror or exc}); "
                "checking in-process",
                file=sys.stderr,
            )
        else:
            if kind == "OK":
                print(text, flush=True)
            elif kind == "ERR":
                print(f"dance-ssh-keys: the daemon could not decide: {text}", file=sys.stderr)
            return 0
    from dance.cli.ssh import keys_main  # the slow path: everything in this process

    return keys_main(rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
