"""`dance ssh-keys-command` (an OpenSSH AuthorizedKeysCommand) and `dance ssh-tlsa`.

sshd_config::

    AuthorizedKeysCommand /usr/local/bin/dance-ssh-keys %u %t %k
    AuthorizedKeysCommandUser nobody

where the root-owned wrapper runs ``dance ssh-keys-command "$@" --server ... --syslog``.
The command prints one authorized_keys line ``TYPE BASE64 dance:NAME`` when the offered key
authenticates through DANCE for one of the account's authorized names, and nothing otherwise.
Exit status: 0 (whether or not a line was printed: sshd ignores the output of a failed command
anyway), 2 when the configuration is unusable (unsafe or malformed names file, bad trust anchor):
sshd then logs the failure. Never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import sys
from pathlib import Path

from dance.cli.common import (
    StderrHandler,
    UsageError,
    _Parser,
    add_dns_options,
    add_socket_options,
    client_name_arg,
    make_resolver,
    positive_int,
    run_line_daemon,
    ttl_int,
)

EXIT_OK, EXIT_CONFIG = 0, 2

log = logging.getLogger("dance.ssh")
_handlers: list[logging.Handler] = []


SYSLOG_SOCKET = "/dev/log"


def _syslog_reachable(path: str) -> bool:
    """Whether a syslog daemon listens at ``path`` (SysLogHandler only finds out when it logs)."""
    import socket

    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        probe = socket.socket(socket.AF_UNIX, kind)
        try:
            probe.connect(path)
            return True
        except OSError:
            continue
        finally:
            probe.close()
    return False


def _setup_logging(args: argparse.Namespace) -> None:
    root = logging.getLogger("dance")
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    handler: logging.Handler
    if args.syslog and _syslog_reachable(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(
            address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_AUTH
        )
        handler.setFormatter(logging.Formatter("dance-ssh[%(process)d]: %(message)s"))
    else:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("dance ssh-keys-command: %(message)s"))
        if args.syslog:
            print(
                f"dance ssh-keys-command: syslog is not reachable at {SYSLOG_SOCKET}; "
                "logging to stderr",
                file=sys.stderr,
            )
    for old in _handlers:  # one handler, even when main() runs several times in a process
        root.removeHandler(old)
    _handlers[:] = [handler]
    root.addHandler(handler)


def _teardown_logging(level: int) -> None:
    """Remove our handler and restore the level: in-process callers keep their logging as it was."""
    root = logging.getLogger("dance")
    for old in _handlers:
        root.removeHandler(old)
    _handlers.clear()
    root.setLevel(level)


def cmd_keys_command(args: argparse.Namespace) -> int:
    level = logging.getLogger("dance").level
    _setup_logging(args)
    try:
        return _keys_command(args)
    except UsageError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    except Exception as exc:  # never a traceback to sshd; fail closed
        log.error("internal error, key refused: %s: %s", type(exc).__name__, exc)
        return EXIT_CONFIG
    finally:
        _teardown_logging(level)


def _keys_command(args: argparse.Namespace) -> int:
    from dance.auth import Authenticator
    from dance.identity import Identity
    from dance.ssh import (
        NamesFileError,
        SSHKeyError,
        authorize,
        authorized_keys_line,
        names_for_user,
        ssh_key_to_spki,
    )

    user: str = args.user
    try:
        key = ssh_key_to_spki(args.keytype, args.keyblob)
    except SSHKeyError as exc:
        log.info("key offered for %r refused: %s: %s", user, exc.reason, exc)
        return EXIT_OK
    try:
        names = names_for_user(
            user,
            names_file=None if args.no_names_file else args.names_file,
            user_files=args.user_names,
        )
    except NamesFileError as exc:
        for line in exc.errors:
            log.error("%s", line)
        log.error("names file unusable (%s): %s; refusing every key", exc.reason, exc)
        return EXIT_CONFIG
    if not names:
        log.info("no DANCE names authorized for account %r", user)
        return EXIT_OK
    resolver = make_resolver(args)
    authenticator = Authenticator(resolver, allow=names)

    async def go() -> object:
        async with resolver:
            return await authorize(authenticator, user, None, key, names)

    result = asyncio.run(go())
    if isinstance(result, Identity):
        line = authorized_keys_line(key, result.client_name)
        log.info(
            "accepted %s %s for %r as %s", key.keytype, key.fingerprint, user, result.client_name
        )
        print(line, flush=True)
    else:
        log.info("refused %s %s for %r: %s", key.keytype, key.fingerprint, user, result)
    return EXIT_OK


def cmd_keys_daemon(args: argparse.Namespace) -> int:
    from dance.ssh.server import KeyDaemon, KeyDaemonConfig

    _setup_logging(args)
    make_resolver(args)  # configuration errors (anchors, server) now, as one line, exit 2
    config = KeyDaemonConfig(
        socket_path=args.socket,
        names_file=None if args.no_names_file else args.names_file,
        user_files=args.user_names,
        socket_mode=args.socket_mode,
        max_connections=args.max_connections,
        request_timeout=min(args.deadline + 3.0, 60.0),
    )

    def metrics(daemon: KeyDaemon) -> dict[str, dict[str, float]]:
        stats = daemon.stats
        return {
            "ssh": {"requests": stats.requests, "accepted": stats.accepted,
                    "refused": stats.refused},
            "ssh_errors:reason": dict(stats.errors),
        }  # fmt: skip

    def stopped(daemon: KeyDaemon) -> None:
        log.info(
            "ssh key daemon stopped: %d requests, %d accepted, %d refused, errors %s",
            daemon.stats.requests,
            daemon.stats.accepted,
            daemon.stats.refused,
            daemon.stats.errors or "none",
        )

    return run_line_daemon(
        args,
        "ssh-keys",
        lambda observer: KeyDaemon(config, lambda: make_resolver(args), observer),
        metrics,
        stopped,
    )


def cmd_ssh_tlsa(args: argparse.Namespace) -> int:
    from dance.ssh import SSHKeyError, parse_public_key_line, ssh_tlsa_record

    name = client_name_arg(args.name)
    try:
        text = Path(args.pubkey).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {args.pubkey}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{args.pubkey}: not an OpenSSH public key (not text)") from None
    try:
        key = parse_public_key_line(text)
    except SSHKeyError as exc:
        raise UsageError(f"{args.pubkey}: {exc.reason}: {exc}") from None
    record = ssh_tlsa_record(key, int(args.mtype))
    if args.json:
        print(
            json.dumps(
                {
                    "name": name,
                    "ttl": args.ttl,
                    "keytype": key.keytype,
                    "usage": 3,
                    "selector": 1,
                    "mtype": record.mtype,
                    "data": record.data.hex(),
                    "rdata": record.to_text(),
                }
            )
        )
    else:
        print(record.to_zone_line(name, args.ttl))
    return EXIT_OK


KEYS_DESCRIPTION = (
    "For sshd_config 'AuthorizedKeysCommand /path/to/dance-ssh-keys [OPTIONS] %u %t %k'. "
    "Prints 'TYPE BASE64 dance:NAME' when the key matches the TLSA record (3 1 x) of one "
    "of the account's authorized names, nothing otherwise."
)


def _names_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--names-file",
        default="/etc/dance/ssh-authorized-names",
        metavar="FILE",
        help="account: name[, name...] lines (default: %(default)s); root-owned, not writable "
        "by others",
    )
    p.add_argument("--no-names-file", action="store_true", help="use only the per-user files")
    p.add_argument(
        "--user-names",
        action="store_true",
        help="also honour ~USER/.ssh/authorized_dance_names (StrictModes-style checks)",
    )


def _keys_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", help="the local account (%%u)")
    p.add_argument("keytype", help="the offered key's type (%%t)")
    p.add_argument("keyblob", help="the offered key, base64 (%%k)")
    _names_arguments(p)
    p.add_argument("--syslog", action="store_true", help="log to syslog (auth facility)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_dns_options(p)
    for action in p._actions:  # stdout belongs to sshd: --json has no meaning here
        if action.dest == "json":
            action.help = argparse.SUPPRESS
    p.set_defaults(func=cmd_keys_command)


def keys_main(argv: list[str] | None = None) -> int:
    """The ``dance-ssh-keys`` command: ``dance ssh-keys-command`` on its own, for sshd's
    ``AuthorizedKeysCommand`` (options may stand in sshd_config before ``%u %t %k``)."""
    parser = _Parser(prog="dance-ssh-keys", description=KEYS_DESCRIPTION)
    _keys_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_keys_command(args)
    except KeyboardInterrupt:
        return 130


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ssh-keys-command",
        help="OpenSSH AuthorizedKeysCommand: authorize an offered key through DANCE",
        description=KEYS_DESCRIPTION,
    )
    _keys_arguments(p)

    p = sub.add_parser(
        "ssh-keys-daemon",
        help="serve dance-ssh-keys over a Unix socket with a warm DNS cache",
        description="The key daemon for 'dance-ssh-keys --socket PATH': one resolver and its "
        "validated cache for every key sshd asks about.",
    )
    add_socket_options(p, 0o666, "sshd's AuthorizedKeysCommandUser must connect")
    p.add_argument(
        "--max-connections", type=positive_int, default=64, help="open requests (default 64)"
    )
    _names_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--syslog", action="store_true", help="log to syslog (auth facility)")
    add_dns_options(p)
    p.set_defaults(func=cmd_keys_daemon)

    p = sub.add_parser("ssh-tlsa", help="print the TLSA record (3 1 x) to publish for an SSH key")
    p.add_argument("--pubkey", required=True, metavar="FILE", help="OpenSSH public key (.pub)")
    p.add_argument("--name", required=True, help="the owner name (ClientName) to publish at")
    p.add_argument(
        "--mtype", choices=("0", "1", "2"), default="1", help="0 Full, 1 SHA2-256, 2 SHA2-512"
    )
    p.add_argument("--ttl", type=ttl_int, help="TTL in seconds for the zone-file line")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ssh_tlsa)
