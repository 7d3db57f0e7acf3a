"""`--config FILE`: TOML keys are the long options; flags win; errors name file and line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dance.cli import positive_int
from dance.service.config import ConfigError, config_argv, locate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--allow", action="append")
    p.add_argument("--san-fallback", action="store_true")
    p.add_argument("--max-connections", type=positive_int, default=10)
    p.add_argument("--mode", choices=["tcp", "http"], default="tcp")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def load(tmp_path: Path, text: str, argv: list[str] | None = None) -> argparse.Namespace:
    f = tmp_path / "svc.toml"
    f.write_text(text)
    p = parser()
    return p.parse_args(config_argv(p, argv or [], str(f)))


def test_keys_are_long_options(tmp_path: Path) -> None:
    args = load(
        tmp_path,
        'listen = "127.0.0.1:8443"\nallow = [".a.example", ".b.example"]\n'
        'san-fallback = true\nmax_connections = 7\nmode = "http"\nverbose = 2\n',
    )
    assert args.listen == "127.0.0.1:8443"
    assert args.allow == [".a.example", ".b.example"]
    assert args.san_fallback is True and args.max_connections == 7
    assert args.mode == "http" and args.verbose == 2


def test_flags_win_and_replace_lists(tmp_path: Path) -> None:
    text = 'listen = "127.0.0.1:1"\nallow = [".a.example"]\nmax-connections = 7\n'
    args = load(tmp_path, text, ["--listen", "127.0.0.1:2", "--allow", ".c.example"])
    assert args.listen == "127.0.0.1:2"
    assert args.allow == [".c.example"]  # replaced, not merged
    assert args.max_connections == 7
    args = load(tmp_path, text, ["--max-connections=9"])
    assert args.max_connections == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listen = "x"\nalow = ["a"]\n', "svc.toml:2: alow: not an option of this command (did you mean allow?)"),  # noqa: E501
        ('listen = "x"\n\nmax-connections = 0\n', "svc.toml:3: max-connections: must be 1 or more"),
        ('listen = "x"\nmode = "udp"\n', "svc.toml:2: mode: 'udp' is not one of tcp, http"),
        ('listen = "x"\nsan-fallback = "yes"\n', "svc.toml:2: san-fallback: a switch takes true or false"),  # noqa: E501
        ('listen = ["a", "b"]\n', "svc.toml:1: listen: takes one value, not a list"),
        ('listen = "x"\n[proxy]\nmode = "tcp"\n', "svc.toml:2: [proxy]: tables are not used"),
        ('listen = "x"\nallow = [{a = 1}]\n', "svc.toml:2: allow: {'a': 1} is not a string"),
        ('listen = "x"\nmode = \n', "svc.toml:2: not valid TOML"),
        ("listen = 'x'\nhelp = true\n", "svc.toml:2: help: not an option"),
    ],
)  # fmt: skip
def test_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_and_binary_files(tmp_path: Path) -> None:
    p = parser()
    with pytest.raises(ConfigError, match="cannot read"):
        config_argv(p, [], str(tmp_path / "absent.toml"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config_argv(p, [], str(tmp_path / "bin.toml"))


def test_later_errors_are_located() -> None:
    origins = {"--listen": "svc.toml:1 listen", "--listen-dot": "svc.toml:2 listen-dot"}
    assert locate("bad --listen 'x'", origins) == "bad --listen 'x' (svc.toml:1 listen)"
    assert locate("bad --listen-dot 'x'", origins).endswith("(svc.toml:2 listen-dot)")
    assert locate("something else", origins) == "something else"


# -- through the command line ------------------------------------------------------------------

DANCE = str(Path(sys.executable).with_name("dance"))


def test_cli_config_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('listen = "nonsense"\nallow = [".example.com"]\n')
    out = subprocess.run([DANCE, "agent", "--config", str(f)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "(agent.toml:1 listen)" in out.stderr
    f.write_text('listen = "127.0.0.1:0"\nallow = [".example.com"]\nbogus-key = 1\n')
    out = subprocess.run([DANCE, "agent", "--config", str(f)], capture_output=True, text=True)
    assert out.returncode == 2 and "agent.toml:3: bogus-key: not an option" in out.stderr


def test_cli_service_starts_from_a_file_and_flags_win(tmp_path: Path) -> None:
    names = tmp_path / "names"
    names.write_text("root: a._user.example.com\n")
    anchor = tmp_path / "anchor"
    anchor.write_text("example.com. IN DS 1 13 2 " + "00" * 32 + "\n")
    conf = tmp_path / "ssh.toml"
    conf.write_text(
        f'socket = "{tmp_path / "from-file.sock"}"\nnames-file = "{names}"\n'
        f'server = "127.0.0.1:1"\ntrust-anchor = "{anchor}"\nmax-connections = 3\n'
    )
    flag_sock = tmp_path / "from-flag.sock"
    proc = subprocess.Popen(
        [DANCE, "ssh-keys-daemon", "--config", str(conf), "--socket", str(flag_sock)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not flag_sock.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not (tmp_path / "from-file.sock").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
