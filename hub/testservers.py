"""Real servers for tests and benchmarks: a throwaway PostgreSQL cluster and an S3 server.

- :class:`PostgresCluster` runs ``initdb`` + ``pg_ctl`` from the machine's PostgreSQL (Debian's
  ``postgresql`` package: ``/usr/lib/postgresql/<N>/bin``) on a temp folder and a free loopback
  port; as root it drops to the ``postgres`` user (the server refuses to run as root).
- :class:`S3Server` runs moto's standalone server (``moto_server``, from ``moto[server]``) on a
  free loopback port as a subprocess: a real S3 HTTP API, held in its memory.

Both raise :class:`ServerUnavailable` with the reason when they cannot start, so a test can skip
saying why. Both stop (and delete their folder) on exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType

__all__ = ["HubProcess", "PostgresCluster", "S3Server", "ServerUnavailable", "free_port"]


class ServerUnavailable(RuntimeError):
    """The server cannot run on this machine (the message says why)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).resolve().parent
    raise ServerUnavailable("PostgreSQL is not installed (apt-get install postgresql)")


class PostgresCluster:
    """A PostgreSQL server on a temp folder; :meth:`new_database` gives each test its own."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="leanloop-pg-"))
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable("running as root and there is no 'postgres' user") from None
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self.data = self.root / "data"
        self.user = "leanloop"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._user is not None:
            cmd = ["setpriv", f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}",
                   "--clear-groups", *cmd]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)

    def start(self) -> PostgresCluster:
        r = self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                      "--no-sync")  # fmt: skip
        if r.returncode != 0:
            self.stop()
            raise ServerUnavailable(f"initdb failed: {r.stderr.strip()[-300:]}")
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                      "-w", "-t", "60", "start")  # fmt: skip
        if r.returncode != 0:
            log = (self.root / "log").read_text()[-300:] if (self.root / "log").exists() else ""
            self.stop()
            raise ServerUnavailable(f"pg_ctl start failed: {r.stderr.strip()[-200:]} {log}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; return its URL."""
        import psycopg

        name = "t" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class S3Server:
    """moto's S3-compatible server on loopback, as a subprocess."""

    access_key_id = "leanloop"
    secret_access_key = "leanloop-secret"

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
            "moto_server"
        )
        if exe is None:
            raise ServerUnavailable("moto_server is not installed (pip install 'moto[server]')")
        self._proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerUnavailable(f"moto_server exited with {self._proc.returncode}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable("moto_server did not answer within 30 s")

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket; return its name."""
        import boto3

        name = name or "leanloop-" + uuid.uuid4().hex[:10]
        boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        ).create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class HubProcess:
    """``leanloop hub serve`` as a process of its own on a free loopback port (a hub replica a
    test or benchmark can SIGKILL). ``config`` holds HubConfig fields (``data_dir`` required;
    S3 settings as a plain mapping)."""

    def __init__(self, config: dict[str, object], log: Path | None = None) -> None:
        import yaml

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(str(config["data_dir"]))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = {"port": self.port, "timestamp_check_interval_s": 3600, **config}
        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()}
        self.config_file = self.data_dir.parent / f"{self.data_dir.name}.hub.yaml"
        self.config_file.write_text(yaml.safe_dump(cfg))
        self.log = log or self.data_dir.parent / f"{self.data_dir.name}.hub.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> HubProcess:
        argv = [sys.executable, "-m", "leanloop.cli", "hub", "serve"]
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                [*argv, "--config", str(self.config_file)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-600:]
                raise RuntimeError(f"hub exited with {self._proc.returncode}: {tail}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.url}/healthz", timeout=2).close()
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hub did not answer /healthz within {timeout} s")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def enroll_token(self) -> str:
        return (self.data_dir / "enroll.token").read_text().strip()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush (a crashed replica)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
