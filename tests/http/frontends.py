"""Real HTTP front ends (nginx, HAProxy, the agent, backends): the test kit's, re-exported so the
HTTP tests keep one import path (dance.testkit.frontends is what bench/ uses)."""

from __future__ import annotations

from dance.testkit.frontends import (
    DANCE,
    HAPROXY_LUA,
    TlsFiles,
    client_files,
    echo_backend,
    haproxy_conf,
    https_get,
    nginx_conf,
    server_tls,
    start_agent,
    start_haproxy,
    start_nginx,
    wait_port,
    wsgi_backend,
)
from dance.testkit.servers import Proc

__all__ = [
    "DANCE",
    "HAPROXY_LUA",
    "Proc",
    "TlsFiles",
    "client_files",
    "echo_backend",
    "haproxy_conf",
    "https_get",
    "nginx_conf",
    "server_tls",
    "start_agent",
    "start_haproxy",
    "start_nginx",
    "wait_port",
    "wsgi_backend",
]
