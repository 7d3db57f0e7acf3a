"""SSH logins authorized by DNS names (architecture-10 section 4.1.11, Example 11).

``dance.ssh.core``: SSH keys as SubjectPublicKeyInfo, the names files, `authorize`.
``dance.ssh.server``: the key daemon, a warm cache that sshd's hook asks over a Unix socket.
``dance.ssh.protocol`` and ``dance.ssh.client``: the daemon's one-line protocol and its client,
standard library only, for ``dance-ssh-keys`` (``dance.cli.ssh_hook``), the hook sshd runs for
every offered key.

The public names of ``dance.ssh.core`` are importable from here; they load on first use (PEP
562), so that importing ``dance.ssh.client`` stays cheap.
"""

TYPE_CHECKING = False  # not typing's: the hook must not pay for importing typing
if TYPE_CHECKING:
    from typing import Any

    from dance.ssh.core import (
        DEFAULT_NAMES_FILE,
        KEY_TYPES,
        USER_NAMES_FILE,
        AuthorizedNames,
        NamesFileError,
        SSHKey,
        SSHKeyError,
        authorize,
        authorized_keys_line,
        check_path_safe,
        names_for_user,
        parse_public_key_line,
        ssh_key_to_spki,
        ssh_tlsa_record,
    )

__all__ = [
    "DEFAULT_NAMES_FILE",
    "KEY_TYPES",
    "USER_NAMES_FILE",
    "AuthorizedNames",
    "NamesFileError",
    "SSHKey",
    "SSHKeyError",
    "authorize",
    "authorized_keys_line",
    "check_path_safe",
    "names_for_user",
    "parse_public_key_line",
    "ssh_key_to_spki",
    "ssh_tlsa_record",
]


def __getattr__(name: str) -> "Any":
    if name not in __all__:
        raise AttributeError(f"module 'dance.ssh' has no attribute {name!r}")
    value = getattr(__import__("dance.ssh.core", fromlist=[name]), name)
    globals()[name] = value
    return value
