"""The `dance` command line. It only parses arguments, reads files and prints.

``main`` builds the parser (``dance.cli.main``) from one module per command group: ``core``
(tlsa, verify, lookup, check, demo), ``tls``, ``http``, ``smtp``, ``ssh``, ``provision``,
``message``, ``authority``; ``common`` holds what they share. Exit codes: 0 success, 1 a negative
verdict (rejected, bogus), 2 unusable input or configuration.
"""

TYPE_CHECKING = False  # not typing's: `dance-ssh-keys` (dance.cli.ssh_hook) must stay cheap
if TYPE_CHECKING:
    from typing import Any

    from dance.cli.common import (
        EXIT_NEGATIVE,
        EXIT_OK,
        EXIT_USAGE,
        StderrHandler,
        UsageError,
        _parse_server,
        _Parser,
        add_dns_options,
        client_name_arg,
        load_chain,
        load_presented,
        load_spki,
        log_to_stderr,
        lookup_hint,
        make_resolver,
        parse_hostport,
        positive_float,
        positive_int,
        print_result,
        record_owner_arg,
        ttl_int,
    )
    from dance.cli.main import COMMAND_MODULES, SERVICE_COMMANDS, _with_config, build_parser, main

_FROM_MAIN = {"COMMAND_MODULES", "SERVICE_COMMANDS", "_with_config", "build_parser", "main"}

__all__ = [
    "COMMAND_MODULES",
    "EXIT_NEGATIVE",
    "EXIT_OK",
    "EXIT_USAGE",
    "SERVICE_COMMANDS",
    "StderrHandler",
    "UsageError",
    "_Parser",
    "_parse_server",
    "_with_config",
    "add_dns_options",
    "build_parser",
    "client_name_arg",
    "load_chain",
    "load_presented",
    "load_spki",
    "log_to_stderr",
    "lookup_hint",
    "main",
    "make_resolver",
    "parse_hostport",
    "positive_float",
    "positive_int",
    "print_result",
    "record_owner_arg",
    "ttl_int",
]


def __getattr__(name: str) -> "Any":
    if name not in __all__:
        raise AttributeError(f"module 'dance.cli' has no attribute {name!r}")
    module = "dance.cli.main" if name in _FROM_MAIN else "dance.cli.common"
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value
    return value
