"""Real systemd as PID 1 in a container, for the unit tests (tests/systemd/).

``systemd-nspawn -D / --volatile=yes`` boots the host's own ``/usr`` read-only under a fresh
tmpfs root: no OS tree to build or download, a boot takes 2–3 s. The container gets its own
network namespace (loopback only). What the tests install is bound in read-only: the unit
files, sysusers.d and tmpfiles.d entries exactly as shipped in ``systemd/``, the source tree,
and ``/opt/leanloop/venv`` — a small venv of the system Python (built once under
``/var/cache/leanloop-test``) whose ``.pth`` adds this checkout's venv site-packages, so the
unit's ``ExecStart=/opt/leanloop/venv/bin/leanloop`` runs this checkout's code. Commands run
inside with ``nsenter`` into the container's init.

:func:`why_not` says why the machine cannot do this (then the tests skip with that reason).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/leanloop-test")
SYSTEM_PYTHON = "/usr/bin/python3"


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def why_not() -> str | None:
    """None when systemd can boot in a container here, else the reason."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    if ROOT.is_relative_to("/tmp") or ROOT.is_relative_to("/var/tmp"):
        # The booted container mounts its own /tmp and the hardened unit adds PrivateTmp=yes,
        # so code of a checkout under /tmp cannot run in the service.
        return f"the checkout {ROOT} is under /tmp, which the container and the unit hide"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn not installed (apt-get install systemd-container)"
    if not Path("/usr/lib/systemd/systemd").exists():
        return "no /usr/lib/systemd/systemd to boot"
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} missing"
    probe = _run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"])
    if probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        return (
            f"the system Python ({probe.stdout.strip()}) is not this venv's "
            f"{tuple(sys.version_info[:2])}: its compiled packages would not load"
        )
    try:
        r = _run(
            [
                "systemd-nspawn",
                "-D",
                "/",
                "--volatile=yes",
                "--register=no",
                "--keep-unit",
                "--quiet",
                "--private-network",
                "/usr/bin/true",
            ],
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return "systemd-nspawn did not run a command within 60 s"
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        return f"systemd-nspawn cannot run here: {lines[0] if lines else r.returncode}"
    return None


def container_venv() -> Path:
    """A venv of the system Python that runs this checkout (see the module story)."""
    site = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{ROOT}\0{site}".encode()).hexdigest()[:12]
    venv = CACHE / f"venv-{key}"
    if not (venv / "bin" / "leanloop").exists():
        tmp = CACHE / f".venv-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(tmp)], check=True)
        ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        (tmp / "lib" / ver / "site-packages" / "leanloop-dev.pth").write_text(
            f"import site; site.addsitedir({site!r})\n"
        )
        (tmp / "bin" / "leanloop").write_text(
            "#!/opt/leanloop/venv/bin/python\nimport sys\nfrom leanloop.cli import main\n"
            "sys.exit(main())\n"
        )
        (tmp / "bin" / "leanloop").chmod(0o755)
        os.replace(tmp, venv) if not venv.exists() else shutil.rmtree(tmp)
    return venv


class Container:
    """One booted container; :meth:`sh` runs a shell command inside."""

    def __init__(self, name: str, binds: list[tuple[Path | str, str]], log: Path) -> None:
        self.name = name
        self.binds = binds
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def start(self, timeout: float = 60) -> None:
        cmd = [
            "systemd-nspawn",
            "-D",
            "/",
            "--volatile=yes",
            "--register=no",
            "--keep-unit",
            "-M",
            self.name,
            "-b",
            "--console=pipe",
            "--private-network",
        ]
        for src, dst in self.binds:
            cmd.append(f"--bind-ro={src}:{dst}")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while self.init_pid == 0:
            assert time.monotonic() < deadline, f"container did not start: {self.log.read_text()}"
            assert self.proc.poll() is None, f"nspawn exited: {self.log.read_text()}"
            self.init_pid = self._find_init()
            time.sleep(0.1)
        while True:
            r = self.sh("systemctl is-system-running", check=False)
            if r.stdout.strip() in ("running", "degraded"):
                return
            assert time.monotonic() < deadline, f"boot did not finish: {r.stdout}"
            time.sleep(0.2)

    def _find_init(self) -> int:
        """The container's PID 1 (a descendant of nspawn running systemd)."""
        assert self.proc is not None
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                try:
                    exe = os.readlink(f"/proc/{k}/exe")
                except OSError:
                    exe = ""
                if exe.endswith("/systemd/systemd"):
                    return int(k)
                todo.append(int(k))
        return 0

    def sh(
        self, script: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        r = _run(["nsenter", "-t", str(self.init_pid), "-a", "/bin/sh", "-c", script], timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"{script!r} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def prop(self, unit: str, name: str) -> str:
        return self.sh(f"systemctl show -p {name} --value {unit}").stdout.strip()

    def write(self, path: str, text: str) -> None:
        d = os.path.dirname(path)
        self.sh(f"mkdir -p {d} && cat > {path} <<'LEANLOOP_EOF'\n{text}\nLEANLOOP_EOF")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.sh("systemctl poweroff --no-block", check=False, timeout=10)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
