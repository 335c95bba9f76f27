"""The shipped units under real systemd (PID 1 in systemd-nspawn; tests/systemd/nspawnkit.py).

Shows: the device is ``active`` only after READY=1 (here READY waits for a camera that is slow
to answer), a hung frame loop is killed by the watchdog and restarted within 40 s with its
traceback in the journal, ``systemctl stop`` takes < 5 s, the sandbox refuses writes outside
the state folder, log lines carry journald priorities and one timestamp, and the hub unit
starts on a fresh data folder with the ``--keys`` it needs. Skips with the reason where
systemd-nspawn cannot run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.nspawnkit import ROOT, Container, container_venv, why_not

pytestmark = pytest.mark.integration

UNITS = ROOT / "systemd"
BLACKHOLE = (
    "import socket, time\n"
    "s = socket.create_server(('127.0.0.1', 9999))\n"
    "held = []\n"
    "while True:\n"
    "    held.append(s.accept())  # accept and never answer: a camera that hangs\n"
)
SLOW_CAMERA_CONFIG = """\
device_id: ct-1
source: {type: mjpeg, url: "http://127.0.0.1:9999/stream", timeout_s: 3, backoff_max_s: 5}
"""


def _hub_keys(tmp: Path) -> Path:
    """The hub's part of a real ``leanloop keys init`` folder (never the admin keys)."""
    full = tmp / "keys-full"
    r = subprocess.run(
        [
            str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "leanloop"),
            "keys",
            "init",
            "--out",
            str(full),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        pytest.skip(f"leanloop keys init failed (hub extra missing?): {r.stderr.strip()}")
    hub = tmp / "hub-keys"
    hub.mkdir()
    shutil.copy(full / "root.json", hub / "root.json")
    shutil.copytree(full / "roots", hub / "roots")
    shutil.copytree(full / "online", hub / "online")
    for p in [hub, *hub.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # bound read-only into the container
    return hub


@pytest.fixture(scope="module")
def ct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    why = why_not()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("nspawn")
    venv = container_venv()
    keys = _hub_keys(tmp)
    # A first boot applies presets, which would enable (and start) the units before the tests.
    preset = tmp / "00-leanloop-test.preset"
    preset.write_text("disable leanloop.service\ndisable leanloop-hub.service\n")
    binds: list[tuple[Path | str, str]] = [
        (ROOT, str(ROOT)),
        (venv, "/opt/leanloop/venv"),
        (UNITS / "leanloop.service", "/etc/systemd/system/leanloop.service"),
        (UNITS / "leanloop-hub.service", "/etc/systemd/system/leanloop-hub.service"),
        (UNITS / "sysusers.d" / "leanloop.conf", "/etc/sysusers.d/leanloop.conf"),
        (UNITS / "sysusers.d" / "leanloop-hub.conf", "/etc/sysusers.d/leanloop-hub.conf"),
        (UNITS / "tmpfiles.d" / "leanloop.conf", "/etc/tmpfiles.d/leanloop.conf"),
        (UNITS / "tmpfiles.d" / "leanloop-hub.conf", "/etc/tmpfiles.d/leanloop-hub.conf"),
        (keys, "/etc/leanloop-hub/keys"),
        (preset, "/etc/systemd/system-preset/00-leanloop-test.preset"),
        # Host services the container would start for nothing (and a 2-minute network wait).
        ("/dev/null", "/etc/systemd/system/mosquitto.service"),
        ("/dev/null", "/etc/systemd/system/systemd-networkd-wait-online.service"),
    ]
    c = Container(f"llt{os.getpid()}", binds, tmp / "boot.log")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _journal(ct: Container, unit: str, since: str = "") -> list[dict[str, str]]:
    r = ct.sh(f"journalctl -u {unit} -o json --no-pager {since}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def _msg(e: dict[str, str]) -> str:
    m = e.get("MESSAGE", "")
    return m if isinstance(m, str) else bytes(m).decode(errors="replace")


def _wait(cond, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - t0


def _start_device(ct: Container, config: str, env: dict[str, str] | None = None) -> None:
    ct.write("/etc/leanloop/device.yaml", config)
    dropin = "/etc/systemd/system/leanloop.service.d/test.conf"
    if env:
        lines = "\n".join(f"Environment={k}={v}" for k, v in env.items())
        ct.write(dropin, f"[Service]\n{lines}")
    else:
        ct.sh(f"rm -f {dropin}")
    ct.sh("systemctl daemon-reload && systemctl reset-failed leanloop || true")


def test_device_is_active_only_after_ready_when_camera_is_slow(ct: Container) -> None:
    ct.write("/root/blackhole.py", BLACKHOLE)
    ct.sh("systemd-run --unit=blackhole /usr/bin/python3 /root/blackhole.py")
    _start_device(ct, SLOW_CAMERA_CONFIG)
    ct.sh("systemctl start --no-block leanloop")
    states = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        s = ct.sh("systemctl is-active leanloop", check=False).stdout.strip()
        states.append(s)
        if s == "active":
            break
        time.sleep(0.2)
    took = time.monotonic() - t0
    assert states[-1] == "active", states
    assert "activating" in states  # started, not ready: the camera did not answer for 3 s
    assert took >= 2.5, f"active after {took:.1f} s, before the camera's 3 s open timeout"
    print(f"figure: active {took:.1f} s after start (camera open timeout 3 s)")
    entries = _journal(ct, "leanloop")
    msgs = [_msg(e) for e in entries]
    ready = next(i for i, m in enumerate(msgs) if "ready:" in m)
    started = next(i for i, m in enumerate(msgs) if m.startswith("Started leanloop.service"))
    assert ready < started
    status = ct.prop("leanloop", "StatusText")
    assert "source cam0" in status and "update idle" in status, status


def test_device_logs_carry_journal_priority_and_one_timestamp(ct: Container) -> None:
    # From the slow-camera start above: "cannot open" is a warning.
    entries = [e for e in _journal(ct, "leanloop") if e.get("_COMM") != "systemd"]
    warn = [e for e in entries if "cannot open" in _msg(e)]
    assert warn, [_msg(e) for e in entries]
    assert warn[0]["PRIORITY"] == "4"
    assert _msg(warn[0]).startswith("leanloop.source: ")  # no "<4>", no second timestamp
    info = [e for e in entries if "ready:" in _msg(e)]
    assert info and info[0]["PRIORITY"] == "6"


def test_sandbox_refuses_writes_outside_state_folder(ct: Container) -> None:
    if ct.sh("systemctl is-active leanloop", check=False).stdout.strip() != "active":
        _start_device(ct, SLOW_CAMERA_CONFIG)
        ct.sh("systemctl start leanloop")
    pid = ct.prop("leanloop", "MainPID")
    uid = ct.sh("id -u leanloop").stdout.strip()
    as_service = f"nsenter -t {pid} -a -S {uid} -G {uid}"
    ok = ct.sh(f"{as_service} touch /var/lib/leanloop/probe", check=False)
    assert ok.returncode == 0, ok.stderr
    for path in ("/etc/probe", "/var/lib/probe", "/var/log/probe", "/opt/probe", "/usr/probe"):
        r = ct.sh(f"{as_service} touch {path}", check=False)
        assert r.returncode != 0 and "Read-only file system" in r.stderr, (path, r.stderr)
    # The same writes outside the sandbox (root in the container) work: the unit refused them.
    ct.sh("touch /etc/probe /var/lib/probe /var/log/probe")
    r = ct.sh(f"{as_service} ls /root", check=False)
    assert r.returncode != 0  # ProtectHome


def test_reload_reopens_source_and_is_ready_again(ct: Container) -> None:
    if ct.sh("systemctl is-active leanloop", check=False).stdout.strip() != "active":
        _start_device(ct, SLOW_CAMERA_CONFIG)
        ct.sh("systemctl start leanloop")
    pid = ct.prop("leanloop", "MainPID")
    ct.sh("systemctl reload leanloop", timeout=60)  # SIGHUP: RELOADING=1 ... READY=1
    assert ct.prop("leanloop", "ActiveState") == "active"
    assert ct.prop("leanloop", "MainPID") == pid  # the same process: reloaded, not restarted
    # systemd 252 ends the reload job when the signal is sent; the reopen follows.
    _wait(
        lambda: any("reload: reopening source cam0" in _msg(e) for e in _journal(ct, "leanloop")),
        15,
        "the service reopening its source",
    )
    msgs = [_msg(e) for e in _journal(ct, "leanloop")]
    assert any(m.startswith("Reloaded leanloop.service") for m in msgs), msgs[-5:]
    _wait(lambda: ct.prop("leanloop", "ActiveState") == "active", 15, "READY after the reload")


def test_device_stops_within_5_s(ct: Container) -> None:
    if ct.sh("systemctl is-active leanloop", check=False).stdout.strip() != "active":
        _start_device(ct, SLOW_CAMERA_CONFIG)
        ct.sh("systemctl start leanloop")
    t0 = time.monotonic()
    ct.sh("systemctl stop leanloop")
    took = time.monotonic() - t0
    assert took < 5.0, f"systemctl stop took {took:.1f} s"
    print(f"figure: systemctl stop took {took:.2f} s")
    assert ct.sh("systemctl is-active leanloop", check=False).stdout.strip() == "inactive"


def test_watchdog_restarts_device_when_frame_loop_hangs(ct: Container) -> None:
    folder = "device_id: ct-1\nsource: {type: folder, path: /var/lib/leanloop/inbox}\n"
    _start_device(ct, folder, env={"LEANLOOP_TEST_HANG_AFTER_S": "2"})
    cursor = ct.sh("journalctl --show-cursor -n0 -q | tail -1", check=False).stdout
    ct.sh("systemctl start leanloop")
    first = ct.prop("leanloop", "MainPID")
    hung_at = time.monotonic() + 2
    assert ct.prop("leanloop", "WatchdogUSec") == "20s"
    _wait(lambda: ct.prop("leanloop", "NRestarts") != "0", 45, "restart after the hang")
    _wait(lambda: ct.prop("leanloop", "ActiveState") == "active", 20, "active again")
    restarted_after = time.monotonic() - hung_at
    assert ct.prop("leanloop", "MainPID") != first
    assert restarted_after < 40, f"restarted {restarted_after:.1f} s after the hang"
    print(
        f"figure: active again {restarted_after:.1f} s after the frame loop hung (WatchdogSec=20)"
    )
    since = ""
    if "cursor:" in cursor:
        since = f"--after-cursor='{cursor.split('cursor:', 1)[1].strip()}'"
    text = "\n".join(_msg(e) for e in _journal(ct, "leanloop", since))
    assert "Watchdog timeout" in text
    assert "frame_loop_hung_for_test" in text  # faulthandler's traceback of the hung loop
    ct.sh("systemctl stop leanloop")
    _start_device(ct, folder)


def test_hub_unit_starts_on_fresh_data_folder(ct: Container) -> None:
    assert ct.sh("ls -A /var/lib/leanloop-hub", check=False).stdout.strip() == ""
    ct.sh("systemctl start leanloop-hub")
    _wait(
        lambda: (
            ct.sh(
                'python3 -c "import urllib.request as u, urllib.error as e\n'
                "try: u.urlopen('http://127.0.0.1:8470/api/v1/device/desired', timeout=2)\n"
                'except e.HTTPError as x: print(x.code)"',
                check=False,
            ).stdout.strip()
            == "401"
        ),
        60,
        "hub answering on port 8470",
    )
    assert ct.prop("leanloop-hub", "ActiveState") == "active"
    owner = ct.sh("stat -c %U /var/lib/leanloop-hub/tuf/1.root.json").stdout.strip()
    assert owner == "leanloop-hub"
    t0 = time.monotonic()
    ct.sh("systemctl stop leanloop-hub")
    assert time.monotonic() - t0 < 5.0
