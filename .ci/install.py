"""`pip install ARGS` for the Makefile, through uv when it can (several times faster), else pip.

Run by the venv's own Python: ``.venv/bin/python .ci/install.py -e '.[hub]'``. uv is installed
into the venv with pip the first time. uv reads none of pip's configuration, so the settings pip
would use here (``pip config list``: its config files and ``PIP_*`` variables: indexes,
find-links, constraints, certificate, timeout) are handed to uv, which resolves the way pip does
(the best match across all indexes; ``uv-constraints.txt`` bridges what else differs). A pip
setting uv is not told about, ``LEANLOOP_INSTALLER=pip``, or uv failing (it says why) makes pip
run the same command.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

# pip settings handed to uv (key → uv option; a pip value may hold several, space-separated).
MAPPED = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraints",
    "trusted-host": "--allow-insecure-host",
}
# pip settings that do not change what gets installed (or are handled below).
HARMLESS = {
    "cert", "timeout", "default-timeout", "disable-pip-version-check", "progress-bar", "quiet",
    "verbose", "root-user-action", "no-cache-dir", "cache-dir", "no-warn-script-location",
    "break-system-packages", "no-input", "retries", "no-index", "require-virtualenv",
}  # fmt: skip


def pip(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "pip", "install", "-q", *args])


def pip_settings() -> dict[str, str] | None:
    """``key → value`` of ``pip config list``, or None when pip cannot tell."""
    run = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    )
    if run.returncode != 0:
        return None
    out: dict[str, str] = {}
    for line in run.stdout.splitlines():
        key, _, value = line.partition("=")
        key = key.rsplit(".", 1)[-1]
        value = value.strip().strip("'\"")
        # PIP_* variables (":env:") override the config files, as in pip.
        if key not in out or line.startswith(":env:"):
            out[key] = value
    return out


def uv_command(uv: Path, settings: dict[str, str], args: list[str]) -> list[str] | None:
    """The ``uv pip install`` equal to ``pip install ARGS`` here, or None if uv cannot say it."""
    unknown = sorted(set(settings) - set(MAPPED) - HARMLESS)
    if unknown:
        print(f"note: pip settings {unknown} have no uv equivalent here; pip installs")
        return None
    cmd = [str(uv), "pip", "install", "-q", "--python", sys.executable]
    cmd += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best version anywhere
    cmd += ["--constraints", str(Path(__file__).with_name("uv-constraints.txt"))]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        cmd.append("--no-index")
    for key, option in MAPPED.items():
        for value in settings.get(key, "").split():
            cmd += [option, value]
    return [*cmd, *args]


def main(args: list[str]) -> int:
    if os.environ.get("LEANLOOP_INSTALLER", "uv") == "pip":
        return pip(args)
    uv = Path(sys.executable).parent / "uv"
    if not uv.exists() and pip(["uv"]) != 0:
        print("note: uv does not install here; pip installs")
        return pip(args)
    settings = pip_settings()
    cmd = None if settings is None else uv_command(uv, settings, args)
    if settings is None or cmd is None:
        return pip(args)
    env = dict(os.environ)
    if cert := settings.get("cert"):
        env.setdefault("SSL_CERT_FILE", cert)
    if timeout := settings.get("default-timeout") or settings.get("timeout"):
        env.setdefault("UV_HTTP_TIMEOUT", timeout)
    if subprocess.call(cmd, env=env) == 0:
        return 0
    print(f"note: uv failed ({shlex.join(cmd[:3])} ...); pip installs the same")
    return pip(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
