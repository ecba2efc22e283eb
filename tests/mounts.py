"""Run a command in its own mount namespace with real mounts (a read-only bind mount, a tiny tmpfs).

``unshare -m`` as root, ``unshare -rm`` (a user namespace) otherwise; tests skip where neither is allowed.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys

import pytest


@functools.cache
def _unshare() -> list[str] | None:
    if not shutil.which("unshare"):
        return None
    for flags in (["-m"], ["-rm"]) if os.geteuid() == 0 else (["-rm"],):
        probe = subprocess.run(["unshare", *flags, "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True)
        if probe.returncode == 0:
            return ["unshare", *flags]
    return None


def run_with_mounts(mounts: list[str], argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` after the shell ``mounts`` commands, in a private mount namespace; skip the test if not allowed."""
    unshare = _unshare()
    if unshare is None:
        pytest.skip("no mount namespaces here (unshare -m / -rm not allowed)")
    script = " && ".join([*mounts, "exec " + shlex.join(argv)])
    return subprocess.run([*unshare, "sh", "-c", script], capture_output=True, text=True, **kwargs)


PYTHON = sys.executable
