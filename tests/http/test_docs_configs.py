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
