"""The HAProxy configuration printed in docs/http.md passes `haproxy -c` as it stands (only
file paths replaced), so the documented text is the complete, tested one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.http.frontends import HAPROXY_LUA, server_tls

DOCS = Path(__file__).resolve().parents[2] / "docs" / "http.md"


@pytest.mark.integration
def test_documented_haproxy_configuration_is_valid(tmp_path: Path) -> None:
    haproxy = require_binary("haproxy")
    text = DOCS.read_text()
    blocks = re.findall(r"```haproxy\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    conf = blocks[0]
    tls = server_tls(tmp_path)
    bundle = tmp_path / "api.pem"
    bundle.write_bytes(tls.server_cert.read_bytes() + tls.server_key.read_bytes())
    (tmp_path / "dance.lua").write_text(HAPROXY_LUA)
    conf = conf.replace("/etc/haproxy/api.pem", str(bundle))
    conf = conf.replace("/etc/haproxy/any-ca.pem", str(tls.server_cert))
    conf = conf.replace("/etc/haproxy/dance.lua", str(tmp_path / "dance.lua"))
    # The same deletion lines as the configuration the live tests run.
    for line in ("del-header ^x[-_]dance[-_](client[-_]id|user)$ -m reg", "backend app"):
        assert line in conf
    path = tmp_path / "haproxy.cfg"
    path.write_text(conf)
    out = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _auth_location(conf: str) -> list[str]:
    """The directives of ``location = /_dance_auth`` and ``proxy_cache_path``, comments and
    layout removed."""
    text = re.sub(r"#[^\n]*", "", conf)
    block = re.search(r"location = /_dance_auth \{(.*?)\}", text, re.S)
    path = re.search(r"proxy_cache_path ([^;]*);", text, re.S)
    assert block is not None and path is not None
    out = [" ".join(d.split()) for d in block.group(1).split(";") if d.strip()]
    return [" ".join(path.group(1).split()[1:]), *out]


def test_documented_nginx_cache_configuration_is_the_tested_one(tmp_path: Path) -> None:
    """The nginx configuration printed in docs/http.md has the auth location (cache included)
    that tests/http/test_nginx_cache.py and test_frontends.py run (5 s there as here)."""
    from tests.http.frontends import nginx_conf

    blocks = re.findall(r"```nginx\n(.*?)```", DOCS.read_text(), re.S)
    documented = _auth_location(blocks[0])
    tested = _auth_location(
        nginx_conf(tmp_path, 1, server_tls(tmp_path), agent_port=2, backend_port=3, auth_cache=5)
    )
    assert documented == tested
    assert 'proxy_cache_key "$ssl_client_escaped_cert|$http_x_dance_client_name"' in documented
