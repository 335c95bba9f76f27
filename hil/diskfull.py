"""A real full disk for the hardware-in-the-loop tests: a small tmpfs in a private mount namespace.

``unshare --mount`` gives a process its own mount table, so a test can mount a tmpfs of a few
KiB or MiB on one folder of that process only; when the tmpfs fills, the ENOSPC the process
meets is the kernel's, exactly as on a device whose SD card is full::

    prefix = unshare_prefix()          # None where mounts are not permitted: skip the test
    subprocess.run(in_tmpfs(prefix, folder, 2048, [sys.executable, "script.py"]))
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

__all__ = ["in_tmpfs", "unshare_prefix"]


def unshare_prefix() -> list[str] | None:
    """The ``unshare`` command that may mount a tmpfs here (as root or in a user namespace), or
    None when this machine does not permit it."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        probe = "d=$(mktemp -d) && mount -t tmpfs -o size=16k tmpfs $d && umount $d; rmdir $d"
        try:
            r = subprocess.run([*prefix, "sh", "-c", probe], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return prefix
    return None


def in_tmpfs(prefix: list[str], folder: Path, size_k: int, argv: list[str]) -> list[str]:
    """The command running ``argv`` with a ``size_k`` KiB tmpfs mounted on ``folder`` (which
    must exist), visible to that process only."""
    script = (
        f"mount -t tmpfs -o size={int(size_k)}k tmpfs {shlex.quote(str(folder))} && "
        f"exec {shlex.join(argv)}"
    )
    return [*prefix, "sh", "-c", script]
