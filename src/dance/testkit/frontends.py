"""Real front ends for HTTP tests and benchmarks: nginx, HAProxy, the agent, a backend.

Everything binds loopback on ports chosen at run time; every start_* returns a `Proc` whose
``stop()`` ends the process (callers use try/finally or fixtures).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509

from dance import certs as gen
from dance.testkit.servers import Proc, free_port, require_binary

DANCE = [
    sys.executable,
    "-c",
    "import sys; from dance.cli import main; sys.exit(main(sys.argv[1:]))",
]


def wait_port(proc: Proc, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(f"process exited early:\n{proc.logs()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", proc.port), 0.5):
            return
        time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"port {proc.port} not ready:\n{proc.logs()}")


def start_agent(
    workdir: Path, dns_port: int, anchor: str, args: Sequence[str], *, port: int | None = None
) -> Proc:
    """`dance agent` on 127.0.0.1:``port`` (a free one by default; the same port again to
    restart an agent behind a front end that already knows it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    anchor_file = workdir / "anchor.txt"
    anchor_file.write_text(anchor)
    if port is None:
        port = free_port()
    log = workdir / "agent.log"
    cmd = [
        *DANCE,
        "agent",
        "--listen",
        f"127.0.0.1:{port}",
        "--server",
        f"127.0.0.1:{dns_port}",
        "--trust-anchor",
        str(anchor_file),
        *args,
    ]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    proc = Proc(process, port, log)
    wait_port(proc)
    return proc


@dataclass
class TlsFiles:
    server_cert: Path
    server_key: Path


def server_tls(workdir: Path) -> TlsFiles:
    workdir.mkdir(parents=True, exist_ok=True)
    key = gen.generate_key()
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    cert = gen.self_signed(key, "localhost", now=now)
    cert_path, key_path = workdir / "server.pem", workdir / "server.key"
    cert_path.write_bytes(gen.certificate_pem(cert))
    gen.write_private_key(key_path, key)
    return TlsFiles(cert_path, key_path)


def client_files(workdir: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = workdir / f"{name}.pem", workdir / f"{name}.key"
    cert_path.write_bytes(gen.certificate_pem(cert))
    gen.write_private_key(key_path, key)
    return cert_path, key_path


# Every input the agent reads, exactly as nginx sends them to it (see docs/http.md).
AUTH_CACHE_KEY = "$ssl_client_escaped_cert|$http_x_dance_client_name"


def nginx_conf(
    workdir: Path,
    port: int,
    tls: TlsFiles,
    *,
    agent_port: int | None,
    backend_port: int,
    example2_port: int | None = None,
    workers: int = 1,
    access_log: bool = True,
    auth_cache: float = 0.0,
    auth_cache_key: str = AUTH_CACHE_KEY,
    auth_cache_valid: str = "200 403",
) -> str:
    """The docs/http.md configuration, with test paths and ports filled in.

    ``auth_cache`` > 0: nginx keeps the agent's answers that many seconds (docs/http.md,
    "Caching decisions in nginx"; the documented configuration uses 5). ``auth_cache_key`` and
    ``auth_cache_valid`` exist for control runs with a deliberately wrong configuration.
    """
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    log = f"access_log {workdir}/access.log;" if access_log else "access_log off;"
    cache = cache_path = ""
    if auth_cache > 0 and agent_port is not None:
        cache_path = (
            f"    proxy_cache_path {workdir}/dance_auth_cache levels=1:2 keys_zone=dance_auth:10m\n"
            "                     max_size=64m inactive=60s use_temp_path=off;\n"
        )
        cache = f"""
            proxy_pass_request_headers off;
            proxy_cache dance_auth;
            proxy_cache_key "{auth_cache_key}";
            proxy_cache_valid {auth_cache_valid} {auth_cache:g}s;
            proxy_cache_lock on;
            proxy_ignore_headers Cache-Control;"""
    protected = (
        f"""
        location / {{
            auth_request /_dance_auth;
            auth_request_set $dance_client_id $upstream_http_x_dance_client_id;
            auth_request_set $dance_user $upstream_http_x_dance_user;
            auth_request_set $dance_error $upstream_http_x_dance_error;
            add_header X-DANCE-Error $dance_error always;
            proxy_set_header X-DANCE-Client-ID $dance_client_id;
            proxy_set_header X-DANCE-User $dance_user;
            proxy_set_header Client-Cert "";
            proxy_pass http://127.0.0.1:{backend_port};
        }}

        location = /_dance_auth {{
            internal;
            proxy_pass http://dance_agent/auth;{cache}
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Client-Cert $ssl_client_escaped_cert;
            proxy_set_header X-DANCE-Client-Name $http_x_dance_client_name;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
"""
        if agent_port is not None
        else f"""
        location / {{
            proxy_pass http://127.0.0.1:{backend_port};
        }}
"""
    )
    upstream = (
        f"""
{cache_path}    upstream dance_agent {{
        server 127.0.0.1:{agent_port};
        keepalive 32;
    }}
"""
        if agent_port is not None
        else ""
    )
    example2 = (
        f"""
        location /app2/ {{
            proxy_set_header Client-Cert $ssl_client_escaped_cert;
            proxy_pass http://127.0.0.1:{example2_port};
        }}
"""
        if example2_port is not None
        else ""
    )
    return f"""{user}worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
{temp}
    {log}
{upstream}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {tls.server_cert};
        ssl_certificate_key {tls.server_key};
        ssl_protocols TLSv1.3;
        ssl_verify_client optional_no_ca;
        ssl_session_tickets off;
        keepalive_requests 1000;
        underscores_in_headers off;
        ignore_invalid_headers on;
{protected}{example2}    }}
}}
"""


def start_nginx(workdir: Path, conf_text: str, port: int) -> Proc:

    nginx = require_binary("nginx")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(conf_text)
    log = workdir / "error.log"
    with (workdir / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            [nginx, "-p", str(workdir), "-e", str(log), "-c", str(conf), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(process, port, log)
    wait_port(proc)
    return proc


def haproxy_conf(
    workdir: Path,
    port: int,
    tls: TlsFiles,
    *,
    agent_port: int,
    backend_port: int,
) -> str:
    """The docs/http.md HAProxy configuration (Lua httpclient calling the agent)."""
    bundle = workdir / "server-bundle.pem"
    bundle.write_bytes(tls.server_cert.read_bytes() + tls.server_key.read_bytes())
    bundle.chmod(0o600)
    lua = workdir / "dance.lua"
    lua.write_text(HAPROXY_LUA)
    return f"""global
    setenv DANCE_AGENT http://127.0.0.1:{agent_port}/auth
    lua-load {lua}
    log stderr format raw local0 warning

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend api
    bind 127.0.0.1:{port} ssl crt {bundle} verify optional ca-file {tls.server_cert} ca-ignore-err all crt-ignore-err all ssl-min-ver TLSv1.3 no-tls-tickets
    http-request del-header ^x[-_]dance[-_](client[-_]id|user)$ -m reg
    http-request del-header ^client[-_]cert([-_]chain)?$ -m reg
    http-request lua.dance_auth
    http-request deny deny_status 403 hdr X-DANCE-Error %[var(txn.dance_error)] unless {{ var(txn.dance_ok) -m str 1 }}
    http-request set-header X-DANCE-Client-ID %[var(txn.dance_client_id)]
    http-request set-header X-DANCE-User %[var(txn.dance_user)] if {{ var(txn.dance_user) -m found }}
    default_backend app

backend app
    server app1 127.0.0.1:{backend_port}
"""  # noqa: E501


HAPROXY_LUA = """-- dance agent call for HAProxy 2.6+ (Lua httpclient). See docs/http.md.
local agent = os.getenv("DANCE_AGENT") or "http://127.0.0.1:9180/auth"

local function first(headers, name)
    local v = headers and headers[name]
    if type(v) == "table" then return v[0] or v[1] end
    return v
end

core.register_action("dance_auth", { "http-req" }, function(txn)
    txn:set_var("txn.dance_ok", "0")
    txn:set_var("txn.dance_error", "not-authenticated")
    local der = txn.sf:ssl_c_der()
    local headers = {}
    if der ~= nil and der ~= "" then
        headers["Client-Cert"] = { txn.c:base64(der) }
    end
    local claimed = txn.http:req_get_headers()["x-dance-client-name"]
    if claimed ~= nil and claimed[0] ~= nil then
        headers["X-DANCE-Client-Name"] = { claimed[0] }
    end
    local client = core.httpclient()
    local ok, res = pcall(function()
        return client:get{ url = agent, headers = headers, timeout = 5000 }
    end)
    if not ok or res == nil then
        txn:set_var("txn.dance_error", "not-authenticated")
        return
    end
    if res.status == 200 then
        txn:set_var("txn.dance_ok", "1")
        txn:set_var("txn.dance_client_id", first(res.headers, "x-dance-client-id") or "")
        local user = first(res.headers, "x-dance-user")
        if user ~= nil then txn:set_var("txn.dance_user", user) end
    else
        txn:set_var("txn.dance_error", first(res.headers, "x-dance-error") or "not-authenticated")
    end
end)
"""


def start_haproxy(workdir: Path, conf_text: str, port: int) -> Proc:

    haproxy = require_binary("haproxy")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "haproxy.cfg"
    conf.write_text(conf_text)
    check = subprocess.run(
        [haproxy, "-c", "-f", str(conf)], capture_output=True, text=True, timeout=30, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy -c failed:\n{check.stdout}{check.stderr}")
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [haproxy, "-db", "-f", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    proc = Proc(process, port, log)
    wait_port(proc)
    return proc


# -- backends --------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(
            {k.lower(): v for k, v in self.headers.items()} | {"_path": self.path}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def echo_backend() -> Iterator[int]:
    """An HTTP server echoing the request headers as JSON (lowercase names)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def wsgi_backend(app: Callable[..., Any]) -> Iterator[int]:
    """A threaded wsgiref server on loopback for ``app``."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Threading(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server("127.0.0.1", 0, app, server_class=Threading, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


# -- clients ---------------------------------------------------------------------------------


def https_get(
    port: int,
    path: str = "/",
    *,
    cert: tuple[Path, Path] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    import http.client

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()
