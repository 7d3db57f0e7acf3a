"""The authorization files: parsing (line-numbered errors) and StrictModes-style checks."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from dance.ssh import AuthorizedNames, NamesFileError, check_path_safe, names_for_user
from dance.ssh import core as ssh

GOOD = """\
# account: names
alice: alice._user.example.com
deploy: ci1._device.example.com, ci2._device.example.com   # two devices
deploy: ci3._device.example.com ci1._device.example.com
root:Admin._user.Example.COM
"""


def test_parse() -> None:
    names = AuthorizedNames.parse(GOOD)
    assert names.names("alice") == ("alice._user.example.com",)
    assert names.names("deploy") == (
        "ci1._device.example.com",
        "ci2._device.example.com",
        "ci3._device.example.com",
    )
    assert names.names("root") == ("admin._user.example.com",)  # canonical lowercase
    assert names.names("bob") == ()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("alice alice._user.example.com\n", 1, "expected 'account:"),
        ("\n\nalice:\n", 3, "no names"),
        ("alice: .ops._device.example.com\n", 1, "suffixes and wildcards"),
        ("alice: *.example.com\n", 1, "suffixes and wildcards"),
        ("# c\nalice: bad..name\n", 2, "bad..name"),
        ("-alice: a.example.com\n", 1, "bad account"),
        ("al ice: a.example.com\n", 1, "bad account"),
        ("alice: " + "a" * 64 + ".example.com\n", 1, "'a"),
    ],
)
def test_malformed_lines(text: str, line: int, fragment: str) -> None:
    with pytest.raises(NamesFileError) as info:
        AuthorizedNames.parse(text, "/etc/names")
    assert info.value.reason == "malformed"
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f"/etc/names:{line}: ")
    assert fragment in info.value.errors[0]


def test_every_bad_line_is_reported() -> None:
    with pytest.raises(NamesFileError) as info:
        AuthorizedNames.parse("a: x.example.com\nb\nc: .y.example.com\nd: z.example.com\n", "f")
    assert [e.split(":")[1] for e in info.value.errors] == ["2", "3"]


def test_user_file_parse() -> None:
    names = AuthorizedNames.parse_user_file("alice", "# mine\nA._user.example.com\n\n")
    assert names.names("alice") == ("a._user.example.com",)
    with pytest.raises(NamesFileError) as info:
        AuthorizedNames.parse_user_file("alice", "a.example.com b.example.com\n", "u")
    assert info.value.errors == ("u:1: expected one name per line",)


def _file(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_system_file_safe(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "the permission tests run as root (they chown)"
    f = _file(tmp_path / "names", GOOD)
    check_path_safe(f, {0})  # /tmp is root-owned and sticky: accepted
    assert names_for_user("alice", names_file=f) == ("alice._user.example.com",)
    assert names_for_user("nobody-here", names_file=f) == ()
    assert names_for_user("alice", names_file=tmp_path / "missing") == ()


@pytest.mark.parametrize("case", ["group-writable", "world-writable", "owner", "dir", "link"])
def test_system_file_unsafe(tmp_path: Path, case: str) -> None:
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    f = _file(d / "names", GOOD)
    path = f
    if case == "group-writable":
        f.chmod(0o664)
    elif case == "world-writable":
        f.chmod(0o646)
    elif case == "owner":
        os.chown(f, 1234, 0)
    elif case == "dir":
        d.chmod(0o777)
    else:
        path = tmp_path / "link"
        path.symlink_to(f)
    with pytest.raises(NamesFileError) as info:
        names_for_user("alice", names_file=path)
    assert info.value.reason == "unsafe"
    # the check can be turned off (tests, containers); the content is then used
    assert names_for_user("alice", names_file=path, check=False) == ("alice._user.example.com",)


def test_system_file_malformed_fails_closed(tmp_path: Path) -> None:
    f = _file(tmp_path / "names", GOOD + "oops\n")
    with pytest.raises(NamesFileError) as info:
        names_for_user("alice", names_file=f)
    assert info.value.errors[0].endswith(":6: expected 'account: name[, name...]'")


class _Pw:
    def __init__(self, uid: int, home: Path) -> None:
        self.pw_uid = uid
        self.pw_dir = str(home)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home" / "alice"
    (home / ".ssh").mkdir(parents=True)
    home.chmod(0o755)
    os.chown(home, 1234, 1234)
    os.chown(home / ".ssh", 1234, 1234)
    (home / ".ssh").chmod(0o700)

    def getpwnam(name: str) -> Any:
        if name == "alice":
            return _Pw(1234, home)
        raise KeyError(name)

    monkeypatch.setattr(ssh.pwd, "getpwnam", getpwnam)
    return home


def _user_file(home: Path, text: str, uid: int = 1234, mode: int = 0o644) -> Path:
    f = home / ".ssh" / "authorized_dance_names"
    f.write_text(text)
    os.chown(f, uid, 1234)
    f.chmod(mode)
    return f


def test_user_file_honoured_only_when_enabled(home: Path, tmp_path: Path) -> None:
    _user_file(home, "laptop._device.example.com\n")
    system = _file(tmp_path / "names", "alice: alice._user.example.com\n")
    assert names_for_user("alice", names_file=system) == ("alice._user.example.com",)
    assert names_for_user("alice", names_file=system, user_files=True) == (
        "alice._user.example.com",
        "laptop._device.example.com",
    )
    assert names_for_user("alice", names_file=None, user_files=True) == (
        "laptop._device.example.com",
    )
    assert names_for_user("carol", names_file=None, user_files=True) == ()  # no such account


def test_user_file_root_owned_ok(home: Path) -> None:
    _user_file(home, "laptop._device.example.com\n", uid=0)
    assert names_for_user("alice", names_file=None, user_files=True) == (
        "laptop._device.example.com",
    )


@pytest.mark.parametrize("case", ["other-owner", "group-writable", "ssh-dir", "home-dir", "bad"])
def test_user_file_unsafe_is_ignored(home: Path, case: str) -> None:
    f = _user_file(home, "laptop._device.example.com\n")
    if case == "other-owner":
        os.chown(f, 4321, 1234)
    elif case == "group-writable":
        f.chmod(0o664)
    elif case == "ssh-dir":
        (home / ".ssh").chmod(0o777)
    elif case == "home-dir":
        os.chown(home, 4321, 4321)
    else:
        f.write_text("laptop._device.example.com\n.x.example.com\n")
    assert names_for_user("alice", names_file=None, user_files=True) == ()


def test_directory_above_home_must_be_root_owned(home: Path) -> None:
    _user_file(home, "laptop._device.example.com\n")
    os.chown(home.parent, 1234, 1234)  # the user owns /home: could swap their home dir
    assert names_for_user("alice", names_file=None, user_files=True) == ()


def test_real_account_lookup(tmp_path: Path) -> None:
    """No monkeypatching: root's real home; a missing file gives no names."""
    root_home = Path(pwd.getpwnam("root").pw_dir)
    if (root_home / ".ssh" / "authorized_dance_names").exists():
        pytest.skip("root has a real authorized_dance_names")
    assert names_for_user("root", names_file=None, user_files=True) == ()
    assert names_for_user("../etc", names_file=None, user_files=True) == ()


def test_fifo_is_not_read(tmp_path: Path) -> None:
    """A FIFO (or any non-regular file) is refused without blocking on it."""
    fifo = tmp_path / "names"
    os.mkfifo(fifo, 0o644)
    with pytest.raises(NamesFileError) as info:
        names_for_user("alice", names_file=fifo)
    assert info.value.reason == "unsafe"
