"""The whole loop on a bad network, short: 3 real devices in network namespaces behind
256 kbit/s tc-shaped links and the fault proxy (delay, jitter, dropped connections, stalls, a
2-s outage mid-update), a real hub process. Every stored sample reaches the hub, every fed
frame is served, v2 comes by delta. The long run with figures: ``python -m bench --only hil``.
Skips, saying why, where network namespaces or tc cannot run (not root, no iproute2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hil.fleet import FleetSettings, run_fleet
from hil.netns import LinkShape, netns_unavailable_reason

pytestmark = pytest.mark.integration


def test_fleet_converges_and_loses_no_sample_when_links_are_slow_and_lossy(tmp_path: Path) -> None:
    if reason := netns_unavailable_reason():
        pytest.skip(reason)
    frames = 3
    settings = FleetSettings(
        devices=3,
        shape=LinkShape(down_kbit=256, up_kbit=256),
        delay_s=0.1,
        jitter_s=0.02,
        drop_rate=0.1,
        stall_rate=0.02,
        stall_s=0.5,
        outage_s=2.0,  # every link down for 2 s while v2 is under way
        frames=frames,
        timeout_s=60.0,
    )
    report = run_fleet(settings, tmp_path)

    assert report["converged"]
    assert report["frames"] == {"fed": 3 * 2 * frames, "served": 3 * 2 * frames}
    assert report["samples"] == {"stored": 3 * 2 * frames, "at_hub": 3 * 2 * frames, "lost": 0}
    # Every byte crossed the shaped links and the proxy: the kernel counted the bundle going down.
    assert report["faults"]["connections"] >= 3
    assert report["faults"]["drops"] + report["faults"]["refused"] >= 1  # the outage bit
    assert report["wire_bytes"]["down"] >= sum(report["downloaded_v1_bytes"].values())
    for dev, v2 in report["downloaded_v2_bytes"].items():
        assert report["v2_files_by_delta"][dev] >= 1
        assert 0 < v2 < report["downloaded_v1_bytes"][dev] / 2


def test_shaped_links_say_why_not_when_the_user_is_not_root() -> None:
    probe = "from hil.netns import netns_unavailable_reason as r; print(r())"
    if os.geteuid() != 0:
        reason = netns_unavailable_reason()
    elif shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop root for this check")
    else:
        nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
        run = subprocess.run([*nobody, sys.executable, "-c", probe], capture_output=True,
                             text=True, timeout=60, cwd=Path(__file__).parents[2])  # fmt: skip
        assert run.returncode == 0, run.stderr
        reason = run.stdout.strip()
    assert reason == "shaped links need root (ip netns add, tc qdisc add)"
