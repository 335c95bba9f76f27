"""Disk full while staging: a clean one-line failure, the active bundle untouched and serving,
the space of the half-written slot given back.

The device process runs in its own mount namespace with a small real tmpfs mounted on its slot
folder (``unshare --mount``), big enough for v1 but not for v1 and v2: the ENOSPC is the
kernel's. Two cases: the free-space check of the plan refuses before writing anything, and —
with that check switched off by a test hook — the write itself hits ENOSPC half-way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from loopkit import BundleMaker, Device, committed, publish

from hil.diskfull import in_tmpfs, unshare_prefix
from hub.client import HubAdminClient
from hub.testing import LiveHub
from runtime.bundle.loader import read_manifest

BOXES = [(25.0, 25.0, 30.0, 30.0), (70.0, 70.0, 40.0, 40.0)]
BOXES_NEW = [(25.0, 25.0, 28.0, 28.0), (70.0, 70.0, 38.0, 38.0)]


UNSHARE = unshare_prefix()
pytestmark = pytest.mark.skipif(
    UNSHARE is None, reason="needs unshare --mount and tmpfs mounts (not permitted here)"
)


class TmpfsDevice(Device):
    """A device process whose slot folder is a tmpfs of ``size_k`` KiB in a private namespace."""

    def __init__(self, size_k: int, *a: Any, **kw: Any) -> None:
        self.size_k = size_k
        super().__init__(*a, **kw)

    def _spawn(self, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        slots = self.state / "slots"
        slots.mkdir(parents=True, exist_ok=True)
        run = [sys.executable, "-m", "leanloop.cli", "device", "run", "--config", str(self.config)]
        assert UNSHARE is not None
        return subprocess.Popen(
            in_tmpfs(UNSHARE, slots, self.size_k, run),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def _blocks(bundle: Path) -> int:
    """Bytes a bundle takes on a tmpfs (each file rounded up to 4 KiB pages)."""
    files = [bundle / rel for rel in read_manifest(bundle).files] + [bundle / "manifest.json"]
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in files)


# (case, env of the device, words the one-line reason must hold)
CASES = [
    ("plan_check", {}, "not enough space for digits v2"),
    ("enospc_mid_write", {"LEANLOOP_TEST_SKIP_SPACE_CHECK": "1"}, "disk full while staging"),
]


@pytest.mark.parametrize(("case", "env", "words"), CASES, ids=[c[0] for c in CASES])
def test_staging_fails_cleanly_and_keeps_serving_when_disk_is_full(
    tmp_path: Path,
    live_hub: LiveHub,
    admin: HubAdminClient,
    keys: Path,
    make_bundle: BundleMaker,
    case: str,
    env: dict[str, str],
    words: str,
) -> None:
    v1, v2 = make_bundle(1, BOXES), make_bundle(2, BOXES_NEW)
    # v1 and the plan check's margin fit; v2 fits only half-way.
    size_k = (_blocks(v1) + 8192 + _blocks(v2) // 2) // 1024
    publish(admin, keys, v1, 1)
    dev = TmpfsDevice(size_k, tmp_path / "devices", live_hub, keys / "root.json", "cam-1", env=env)
    try:
        st = dev.wait("v1 committed", committed(1))
        free_before = st["slots_free_bytes"]
        assert free_before < _blocks(v2)  # the tmpfs really is too small for v2 as well
        publish(admin, keys, v2, 2)
        st = dev.wait("refusal", lambda st: bool(st.get("last_update_error")))
        err = st["last_update_error"]
        assert "\n" not in err and words in err, err
        assert st["update_state"] == "failed"
        assert st["active"]["version"] == 1 and st["active"]["status"] == "committed"
        names = dev.feed(3)
        dev.wait("served by v1", lambda st: all(n in dev.results() for n in names))
        assert {dev.results()[n]["bundle_version"] for n in names} == {1}
        st = dev.wait("space reclaimed", lambda st: st["slots_free_bytes"] == free_before)
        slots = json.loads((dev.state / "slots.json").read_text())
        assert [s["status"] for s in slots["slots"].values()].count("empty") == 1
        assert 2 not in slots.get("bad_versions", {}).get("digits", [])  # may fit another day
        assert dev.proc.poll() is None
    finally:
        dev.stop()
