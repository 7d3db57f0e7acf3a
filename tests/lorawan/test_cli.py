"""``dance lorawan-join-server`` and ``dance lorawan-join-request`` fed unusable options or files:
exit 2, one line on standard error naming the problem, never a traceback, and nothing started
(no DNS query: the DNS server given is a closed port). A request file that is not a JoinReq is a
refusal (exit 1, ``refused: bad-request-message``), as before the move to ``dance``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dance import certs
from dance.cli import main
from tests.lorawan.common import APP_KEY, DEV_EUI, JOIN_EUI, JS, NETID1, NOW, NS1, join_req
from tests.pki import key
from tests.worlds import Files, write_files

NOWHERE = "127.0.0.1:1"  # no DNS server: a command that got as far as a lookup would fail


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    d = tmp_path_factory.mktemp("lorawan-cli")
    return write_files(d, "ns1", certs.self_signed(key(13), NS1, now=NOW), key(13))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def _one_line_error(code: int, out: str, err: str, needle: str) -> None:
    assert code == 2, (out, err)
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    # our own errors are one line; argparse's add its usage line before it
    assert 1 <= len(lines) <= 2 and len(lines[-1]) < 300, err
    assert needle in lines[-1], err


def _keys(files: Files, text: str, mode: int = 0o600, label: str = "devices") -> str:
    """A ``--device-keys`` file holding ``text`` with ``mode``, next to the certificate."""
    path = Path(files.cert).parent / f"{label}.keys"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def _server(files: Files, *extra: str) -> list[str]:
    args = [
        "lorawan-join-server", "--listen", "127.0.0.1:0", "--cert", files.cert,
        "--key", files.key, "--join-eui", JOIN_EUI, "--server", NOWHERE,
    ]  # fmt: skip
    if not any(a.startswith("--device-keys") for a in extra):
        args += ["--device-keys", _keys(files, f"{DEV_EUI}={APP_KEY.hex()}\n")]
    if not any(a.startswith("--network-server") for a in extra):
        args += ["--network-server", f"{NS1}={NETID1}"]
    for arg in extra:  # an option given again replaces the default one
        if arg.startswith("--") and arg in args and arg != "--network-server":
            j = args.index(arg)
            del args[j : j + 2]
    return [*args, *extra]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--device-keys", "/nonexistent/devices.keys"], "cannot read /nonexistent/devices.keys"),
        (["--network-server", NS1], "bad --network-server"),
        (["--network-server", f".netid-000013.example.test={NETID1}"], "one exact name"),
        (["--network-server", f"{NS1}=0013"], "NetID must be 6 hex digits"),
        (
            ["--network-server", f"{NS1}={NETID1}", "--network-server", f"{NS1.upper()}=000042"],
            "same network server is given twice",
        ),
        (["--join-eui", "70b3d57ed000000"], "join_eui must be 16 hex digits"),
        (["--listen", "nonsense"], "bad --listen"),
        (["--listen", "127.0.0.1:65536"], "bad --listen"),
        (["--listen", "127.0.0.1"], "bad --listen"),
        (["--max-connections", "0"], "--max-connections must be at least 1"),
        (["--clientid-codepoint", "nope"], "--clientid-codepoint"),
        (["--dns", "127.0.0.1:1"], "give --server or --dns, not both"),
        (["--trust-anchor", "/nonexistent/anchor.txt"], "/nonexistent/anchor.txt"),
        (["--metrics", "nonsense"], "--metrics"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_join_server_unusable_options_exit_2(
    files: Files, extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line_error(*_run(_server(files, *extra), capsys), needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"{DEV_EUI}\n", ":1: bad device line"),
        (f"# devices\n\n={APP_KEY.hex()}\n", ":3: bad device line"),
        (f"{DEV_EUI}={APP_KEY.hex()[:-1]}\n", "AppKey must be 32 hex digits"),
        (f"{DEV_EUI}={APP_KEY.hex()[:-2]} f\n", "AppKey must be 32 hex digits"),
        (f"{DEV_EUI}={APP_KEY.hex()[:-2]}zz\n", "AppKey must be 32 hex digits"),
        (f"0004a30b001c053={APP_KEY.hex()}\n", "DevEUI must be 16 hex digits"),
        (f"{DEV_EUI}={APP_KEY.hex()}\n{DEV_EUI.upper()}={'0' * 32}\n", "given twice"),
        (b"\xff\xfe".decode("latin-1"), "not UTF-8"),
    ],
    ids=lambda v: v if len(v) < 30 else None,
)
def test_join_server_bad_device_keys_exit_2(
    files: Files, text: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(_keys(files, "", label="bad"))
    path.write_bytes(text.encode("latin-1") if "UTF-8" in needle else text.encode())
    code, out, err = _run(_server(files, "--device-keys", str(path)), capsys)
    _one_line_error(code, out, err, needle)
    assert APP_KEY.hex()[:20] not in err  # a key is never echoed


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_join_server_device_keys_open_to_others_exit_2(
    files: Files, mode: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """AppKeys are device root secrets: a file that group or others can read is refused."""
    path = _keys(files, f"{DEV_EUI}={APP_KEY.hex()}\n", mode=mode, label="open")
    _one_line_error(*_run(_server(files, "--device-keys", path), capsys), "chmod 600")


def test_join_server_takes_no_app_key_on_the_command_line(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old ``--device DEVEUI=APPKEY`` (a secret in every ``ps`` listing) is gone."""
    code, _, err = _run(_server(files, "--device", f"{DEV_EUI}={APP_KEY.hex()}"), capsys)
    assert code == 2 and "unrecognized arguments" in err


def test_join_server_without_network_servers_exit_2(
    files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a for a in _server(files) if a not in ("--network-server", f"{NS1}={NETID1}")]
    _one_line_error(*_run(argv, capsys), "no network servers")


@pytest.mark.parametrize("which", ["--cert", "--key"])
def test_join_server_missing_certificate_or_key_exit_2(
    files: Files, which: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.pem")
    _one_line_error(*_run(_server(files, which, missing), capsys), "cannot start")


def _request(files: Files, request: str, *extra: str) -> list[str]:
    args = [
        "lorawan-join-request", "--connect", "127.0.0.1:1", "--server-name", JS,
        "--client-name", NS1, "--cert", files.cert, "--key", files.key,
        "--request", request, "--server", NOWHERE,
    ]  # fmt: skip
    for arg in extra:
        if arg.startswith("--") and arg in args:
            j = args.index(arg)
            del args[j : j + 2]
    return [*args, *extra]


@pytest.fixture
def request_file(tmp_path: Path) -> str:
    path = tmp_path / "joinreq.json"
    path.write_text(json.dumps(join_req()))
    return str(path)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--request", "/nonexistent/joinreq.json"], "cannot read /nonexistent/joinreq.json"),
        (["--cert", "/nonexistent/ns1.pem"], "cannot use --cert /nonexistent/ns1.pem"),
        (["--key", "/nonexistent/ns1.key"], "/nonexistent/ns1.key"),
        (["--connect", "nonsense"], "bad --connect"),
        (["--connect", "127.0.0.1:70000"], "bad --connect"),
        (["--client-name", "bad name!"], "bad client name"),
        (["--service-port", "0"], "bad --service-port"),
        (["--service-port", "65536"], "bad --service-port"),
        (["--service-port", "x"], "--service-port"),
        (["--dns", "127.0.0.1:1"], "give --server or --dns, not both"),
        (["--trust-anchor", "/nonexistent/anchor.txt"], "/nonexistent/anchor.txt"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_join_request_unusable_options_exit_2(
    files: Files,
    request_file: str,
    extra: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _one_line_error(*_run(_request(files, request_file, *extra), capsys), needle)


def test_join_request_key_of_another_certificate_exit_2(
    files: Files, request_file: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_files(tmp_path, "other", certs.self_signed(key(14), NS1, now=NOW), key(14))
    argv = _request(files, request_file, "--key", other.key)
    _one_line_error(*_run(argv, capsys), "cannot use --cert")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_join_request_malformed_message_is_refused_before_any_lookup(
    files: Files, tmp_path: Path, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "joinreq.json"
    path.write_text('{"MessageType": "JoinReq", "MessageType": "JoinReq"}')
    argv = _request(files, str(path), *(["--json"] if as_json else []))
    code, out, err = _run(argv, capsys)
    assert code == 1, (out, err)
    if as_json:
        refusal = json.loads(out)
        assert refusal["refused"] == "bad-request-message", out
    else:
        assert out.startswith("refused: bad-request-message: "), out
    assert out.count("\n") == 1


def test_process_bad_device_one_line_no_traceback(files: Files) -> None:
    """The same through a real ``python -m dance.cli`` process (what ``dance`` runs)."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, *sys.path])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dance.cli",
            *_server(files, "--device-keys", _keys(files, f"{DEV_EUI}=nothex\n", label="p")),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "AppKey must be 32 hex digits" in done.stderr


def test_old_module_entry_point_is_gone() -> None:
    """``python -m dance.lorawan`` would need the adapter to import the command line (a higher
    layer, tests/test_layers.py): the commands are ``dance lorawan-join-*`` only."""
    import importlib.util

    assert importlib.util.find_spec("dance.lorawan.__main__") is None


def test_join_server_key_of_another_certificate_exit_2(
    files: Files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_files(tmp_path, "other", certs.self_signed(key(14), NS1, now=NOW), key(14))
    _one_line_error(*_run(_server(files, "--key", other.key), capsys), "cannot start")
