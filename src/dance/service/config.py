"""``--config FILE``: TOML files whose keys are the command's long options.

A service command (``dance proxy``, ``smtp-proxy``, ``agent``, ``authority``) reads its options from
a flat TOML file, one key per long option without the dashes, and takes the same values as on the
command line::

    # /etc/dance/proxy.toml
    listen = "127.0.0.1:8443"
    backend = "127.0.0.1:8080"
    allow = ["._device.example.com"]     # a repeatable option takes a list
    san-fallback = true                  # a switch takes true or false
    max-connections = 2048

Flags given on the command line win over the file (a repeatable flag replaces the file's list).
Every key is checked with the flag's own parser before the command runs, and errors name the
file and line: ``proxy.toml:4: allow: bad allow-list entry ...``. Unknown keys are errors (a typo
must not silently drop a setting); so are tables, since one file configures one service.
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "add_config_option", "config_argv"]

_KEY_LINE = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")
_TABLE_LINE = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]")
_NOT_IN_FILES = {"config", "help", "version"}


class ConfigError(ValueError):
    """A configuration file that cannot be used: one line, with the file and line number."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with the long options as keys (flags on the command line win)",
    )


def _key_lines(text: str) -> dict[str, int]:
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _KEY_LINE.match(line)
        if match:
            key = next(g for g in match.groups() if g)
            lines.setdefault(key, number)
        table = _TABLE_LINE.match(line)
        if table:
            lines.setdefault(table.group(1).strip("\"'"), number)
    return lines


def _long_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    options: dict[str, argparse.Action] = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag[2:] not in _NOT_IN_FILES:
                options[flag[2:]] = action
    return options


def _given(argv: Sequence[str], action: argparse.Action) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        for flag in action.option_strings:
            if arg == flag or (flag.startswith("--") and arg.startswith(flag + "=")):
                return True
    return False


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        return str(value)
    return None


def _tokens(key: str, value: Any, action: argparse.Action, where: str) -> list[str]:
    flag = "--" + key
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key}: a switch takes true or false")
        turn_on = value == isinstance(action, argparse._StoreTrueAction)
        return [flag] if turn_on else []
    if isinstance(action, argparse._CountAction):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: {key}: a count takes a whole number")
        return [flag] * value
    repeatable = isinstance(action, argparse._AppendAction)
    multi = action.nargs not in (None, "?") and action.nargs != 1
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not (repeatable or multi):
        raise ConfigError(f"{where}: {key}: takes one value, not a list")
    out: list[str] = []
    texts: list[str] = []
    for item in values:
        text = _scalar(item)
        if text is None:
            raise ConfigError(f"{where}: {key}: {item!r} is not a string or a number")
        _check(key, text, action, where)
        texts.append(text)
    if multi:
        return [flag, *texts]
    for text in texts:
        out += [flag + "=" + text] if text.startswith("-") else [flag, text]
    return out


def _check(key: str, text: str, action: argparse.Action, where: str) -> None:
    value: Any = text
    if callable(action.type):
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {key}: {exc or 'bad value'}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"{where}: {key}: {text!r} is not one of {choices}")


def config_argv(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    path: str,
    origins: dict[str, str] | None = None,
) -> list[str]:
    """The command line with the file's options put in front, minus those the flags override.

    Raises ConfigError (one line, with ``file:line``) for anything the file gets wrong. When
    ``origins`` is given, it receives ``--flag -> "file:line"`` for every option the file set, so
    that errors found later, by the command itself, can name the line too.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    name = Path(path).name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        detail = str(exc)
        match = re.search(r"\(at line (\d+), column \d+\)", detail)
        line = match.group(1) if match else str(len(text.splitlines()) or 1)
        detail = re.sub(r" *[(]at .*", "", detail)
        raise ConfigError(f"{name}:{line}: not valid TOML: {detail}") from None
    lines = _key_lines(text)
    options = _long_options(parser)
    tokens: list[str] = []
    for key, value in data.items():
        where = f"{name}:{lines.get(key, '?')}"
        if isinstance(value, dict):
            raise ConfigError(f"{where}: [{key}]: tables are not used; one file per service")
        action = options.get(key) or options.get(key.replace("_", "-"))
        if action is None:
            close = difflib.get_close_matches(key, list(options), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}: {key}: not an option of this command{hint}")
        if _given(argv, action):
            continue  # the command line wins
        tokens += _tokens(key.replace("_", "-"), value, action, where)
        if origins is not None:
            origins["--" + key.replace("_", "-")] = f"{where} {key}"
    return tokens + list(argv)


def locate(message: str, origins: dict[str, str]) -> str:
    """``message`` with the file and line of the option it names, when the file set it."""
    for flag, where in sorted(origins.items(), key=lambda item: -len(item[0])):
        if re.search(re.escape(flag) + r"(?![A-Za-z0-9-])", message):
            return f"{message} ({where})"
    return message
