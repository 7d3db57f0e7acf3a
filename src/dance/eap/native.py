"""The C verify hook (``hook.c``, shipped with dance): build it with the system's C compiler.

FreeRADIUS 3.2 hands the client certificate to nothing but its ``verify { client = ... }``
command (docs/eap.md explains why rlm_python3 cannot see it), so every check starts a process.
``dance-eap-verify`` is a Python process; the C hook speaks the same protocol with the same
command line and exit statuses, and costs a fork and an exec instead of an interpreter start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["HookBuildError", "build_hook", "hook_source"]

CFLAGS = ("-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2")


class HookBuildError(RuntimeError):
    """No C compiler, or the compiler refused the hook's source."""


def hook_source() -> Path:
    return Path(__file__).with_name("hook.c")


def build_hook(output: Path, cc: str | None = None, timeout: float = 120.0) -> Path:
    """Compile the C hook to ``output`` (mode 0755, replaced atomically); returns ``output``."""
    compiler = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise HookBuildError("no C compiler found (install gcc, or give --cc)")
    output = output.absolute()
    fd, tmp = tempfile.mkstemp(prefix=".dance-eap-verify-", dir=output.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [compiler, *CFLAGS, "-o", tmp, str(hook_source())],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise HookBuildError(f"{compiler} failed: {done.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)  # noqa: S103 - an executable, run by FreeRADIUS's account
        os.replace(tmp, output)
    except OSError as exc:
        raise HookBuildError(f"cannot build the hook: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output
