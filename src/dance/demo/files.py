"""Files the demo parts write in their temporary directory: certificates and keys."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from dance import certs

__all__ = ["write_pair", "write_server"]


def write_pair(d: Path, label: str, cert: Any, key: Any) -> tuple[str, str]:
    """``label.pem`` (a certificate, or PEM bytes: a chain) and ``label.key`` (0600) in ``d``;
    returns their paths."""
    pem = cert if isinstance(cert, bytes) else certs.certificate_pem(cert)
    (d / f"{label}.pem").write_bytes(pem)
    certs.write_private_key(d / f"{label}.key", key)
    return str(d / f"{label}.pem"), str(d / f"{label}.key")


def write_server(
    d: Path, now: datetime.datetime, *, ca_name: str, ca_file: str, server_auth: bool = False
) -> tuple[str, str]:
    """A server CA ``ca_name`` (written to ``d/ca_file``, for the clients' trust) and its
    certificate for ``localhost`` (``server.pem``, ``server.key``); returns their paths."""
    ca_key = certs.generate_key("ec-p256")
    ca = certs.new_ca(ca_key, ca_name, now=now)
    key = certs.generate_key("ec-p256")
    cert = certs.issue_certificate(
        ca, ca_key, key.public_key(), dns_names=["localhost"], now=now, client_auth=False,
        server_auth=server_auth,
    )  # fmt: skip
    (d / ca_file).write_bytes(certs.certificate_pem(ca))
    return write_pair(d, "server", cert, key)
