"""A device moves itself to a new key (issue 12) on real processes: a real hub, a real device
service, and ``leanloop device rotate-key`` killed with SIGKILL after each of its steps.

Kill table (runtime.key_rotation): after the new key is written the hub still knows the old
key, which keeps working; after the hub swapped (nothing stored yet) and after the token was
stored (the key file not yet renamed) the old key is refused, and the device — the running
service, a restarted one, the next ``rotate-key`` — finds the new key on disk, uses it and
makes it current. A completed move leaves one key file, the hub's, and every older key is
refused. Another device cannot move this device's key: it is refused exactly like an id that
does not exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from loopkit import Device, wait_until

from hub.client import HubAdminClient
from hub.testing import LiveHub
from runtime.errors import HubError
from runtime.hubclient import HubClient
from runtime.identity import DeviceKey, KeyFiles

_CLI = (sys.executable, "-m", "leanloop.cli", "device", "rotate-key")


def _rotate(config: Path, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if kill_at is not None:
        env["LEANLOOP_TEST_ROTATE_KILL_AT"] = kill_at
    return subprocess.run(
        [*_CLI, "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _refused(hub: LiveHub, key: DeviceKey, device_id: str = "cam-1") -> bool:
    client = HubClient(hub.url, key=key, device_id=device_id, timeout_s=10)
    try:
        client.answer_challenge(key)
    except HubError as e:
        return e.http_status == 401
    finally:
        client.close()
    return False


def _last_seen(admin: HubAdminClient) -> float:
    seen = [d["last_seen"] for d in admin.devices() if d["device_id"] == "cam-1"]
    return float(seen[0] or 0) if seen else 0.0


def _served_after(admin: HubAdminClient, dev: Device) -> None:
    """The device service authenticates (heartbeats) after now."""
    t = time.time()
    wait_until(f"heartbeats after {t}; log={dev.tail()}", lambda: _last_seen(admin) > t + 0.3)


def _moves(admin: HubAdminClient) -> list[dict[str, str]]:
    return [e["detail"] for e in admin.audit_log() if e["action"] == "device-key-rotated"]


def test_device_moves_to_a_new_key_and_authenticates_when_killed_after_each_step(
    live_hub: LiveHub, admin: HubAdminClient, start_device: Callable[..., Device]
) -> None:
    dev = start_device("cam-1")
    files = KeyFiles(dev.state)
    wait_until("the first heartbeat", lambda: _last_seen(admin) > 0)
    k0 = files.current()

    # Killed after the new key was written: the hub still knows k0, the service goes on.
    r = _rotate(dev.config, "next-written")
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert files.current().public_b64 == k0.public_b64 and files.next() is not None
    assert _moves(admin) == []
    _served_after(admin, dev)

    # Killed after the hub swapped, before the device stored anything: the running service's
    # token and key are refused; it finds the next key on disk and makes it current.
    r = _rotate(dev.config, "hub-swapped")
    assert r.returncode == -signal.SIGKILL, r.stderr
    (move,) = _moves(admin)  # the hub swapped: k0 is refused from now on
    assert move["old_key"] == k0.public_b64 and _refused(live_hub, k0)
    wait_until(  # (the service may have taken it already: it polls every 0.3 s)
        f"the service taking the new key; log={dev.tail()}",
        lambda: files.next() is None and files.current().public_b64 == move["new_key"],
    )
    k1 = files.current()
    assert "the hub knows this device by key" in (dev.dir / "device.log").read_text()
    _served_after(admin, dev)

    # Killed after the token was stored, before the rename; the service is restarted: it
    # starts with the stored token, and the next rotate-key completes the cut move first.
    dev.stop(close_log=False)
    r = _rotate(dev.config, "token-saved")
    assert r.returncode == -signal.SIGKILL, r.stderr
    k2 = files.next()
    assert k2 is not None and files.current().public_b64 == k1.public_b64
    dev.restart()
    _served_after(admin, dev)
    r = _rotate(dev.config)
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert done["settled"] == k2.public_b64 and done["old_key"] == k2.public_b64
    k3 = files.current()
    assert done["new_key"] == k3.public_b64 and files.next() is None
    assert [m["new_key"] for m in reversed(_moves(admin))] == [k.public_b64 for k in (k1, k2, k3)]
    assert all(_refused(live_hub, k) for k in (k0, k1, k2))
    assert not _refused(live_hub, k3)  # (this answer gave the hub a token nobody holds)
    _served_after(admin, dev)  # the service recovers from that too, with k3


def test_rotate_key_of_another_device_is_refused_like_a_missing_device(
    live_hub: LiveHub, admin: HubAdminClient, start_device: Callable[..., Device]
) -> None:
    victim = start_device("cam-1")
    wait_until("the victim's first heartbeat", lambda: _last_seen(admin) > 0)
    victim_key = KeyFiles(victim.state).current()
    answers = []
    for claimed in ("cam-1", "nobody"):  # a thief with its own key claims an id
        state = victim.dir.parent / f"thief-{claimed}"
        thief_key = DeviceKey.load_or_create(state)
        cfg = yaml.safe_load(victim.config.read_text())
        cfg.update(device_id=claimed, state_dir=str(state))
        config = state / "device.yaml"
        config.write_text(yaml.safe_dump(cfg))
        r = _rotate(config)
        assert r.returncode == 1 and r.stdout == ""
        answers.append(r.stderr.replace(claimed, "<id>"))
        assert KeyFiles(state).current().public_b64 == thief_key.public_b64
        assert KeyFiles(state).next() is None  # the refused key is not kept
    assert answers[0] == answers[1] and answers[0].startswith("error: ")
    assert len(answers[0].strip().splitlines()) == 1
    assert _moves(admin) == []
    assert not _refused(live_hub, victim_key)
    _served_after(admin, victim)
