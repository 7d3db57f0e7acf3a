"""The `dance` command: a thin main that builds the parser from the command groups.

Each group is a module of this package with ``register(subparsers)``, adding parsers whose
``func(args) -> int`` raises UsageError for unusable input (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from dance import __version__

if TYPE_CHECKING:
    pass
from dance.cli import core
from dance.cli.common import EXIT_OK, EXIT_USAGE, UsageError, _Parser

# Command groups that live in their own modules: each has register(subparsers) -> None, adding
# parsers whose `func(args) -> int` raises UsageError for unusable input (exit 2).
COMMAND_MODULES: tuple[str, ...] = (
    "dance.cli.tls",
    "dance.cli.provision",
    "dance.cli.http",
    "dance.cli.message",
    "dance.cli.authority",
    "dance.cli.ssh",
    "dance.cli.smtp",
    "dance.cli.mqtt",
    "dance.cli.ldap",
    "dance.cli.eap",
    "dance.cli.radsec",
    "dance.cli.lorawan",
)


# Long-running commands that read ``--config FILE`` (TOML, keys = long options; flags win).
SERVICE_COMMANDS: tuple[str, ...] = (
    "proxy",
    "smtp-proxy",
    "agent",
    "authority",
    "ssh-keys-daemon",
    "mqtt-proxy",
    "ldap-proxy",
    "eap-verify-daemon",
    "radsec-proxy",
    "lorawan-join-server",
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dance",
        description="DANE authentication for clients, devices and users (IETF DANCE).",
    )
    parser.add_argument("--version", action="version", version=f"dance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    core.register(sub)

    import importlib
    import importlib.util

    for module in COMMAND_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(sub)
    from dance.service.config import add_config_option
    from dance.service.options import WORKER_COMMANDS, add_service_options

    for command in SERVICE_COMMANDS:
        service = sub.choices.get(command)
        if service is not None:
            add_config_option(service)
            add_service_options(service, workers=command in WORKER_COMMANDS)
    return parser


def _with_config(
    parser: argparse.ArgumentParser, argv: list[str], origins: dict[str, str]
) -> list[str]:
    """Put a service command's ``--config FILE`` options in front of its flags (flags win)."""
    if not argv or argv[0] not in SERVICE_COMMANDS:
        return argv
    rest = argv[1:]
    path = None
    for i, arg in enumerate(rest):
        if arg == "--":
            break
        if arg == "--config" and i + 1 < len(rest):
            path = rest[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None:
        return argv
    from dance.service.config import ConfigError, config_argv

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        argv[0]
    ]
    try:
        return [argv[0], *config_argv(sub, rest, path, origins)]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    origins: dict[str, str] = {}  # options set by --config FILE: flag -> "file:line key"
    try:
        raw = _with_config(parser, raw, origins)
    except UsageError as exc:
        print(f"dance {raw[0]}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(raw)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except UsageError as exc:
        message = str(exc)
        if origins:
            from dance.service.config import locate

            message = locate(message, origins)
        print(f"dance {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
