"""Shadow-mode A/B end to end: a real hub process, real device processes, real candidates.

Candidates are real bundles (shadowkit): the production models under a new version, the same
with two ontology labels swapped, or with a ``pre`` plug-in that SIGSEGVs, hangs or raises on
poison frames. Promotion goes through the device's ordinary activation → trial → commit path,
and a promoted candidate that fails its trial is rolled back like any update.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from loopkit import Device, Loop, committed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime" / "shadow"))
from shadowkit import build

SHADOW = {"frame_timeout_s": 10.0, "report_interval_s": 0.2, "nice": 5}
HANG_TIMEOUT = {**SHADOW, "frame_timeout_s": 1.0}
POISON = (255, 200)


def report(dev: Device) -> dict[str, Any]:
    try:
        return dict(json.loads((dev.state / "shadow.json").read_text()))
    except (OSError, ValueError):
        return {}


def wait_report(
    dev: Device,
    what: str,
    cond: Callable[[dict[str, Any]], bool],
    feed: tuple[int, int] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Wait for the shadow report to satisfy ``cond``, feeding a normal frame now and then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if dev.proc.poll() is not None:
            raise AssertionError(f"device exited: {dev.tail()}")
        rep = report(dev)
        if rep and cond(rep):
            return rep
        if feed is not None:
            dev.feed(1, feed)
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: {report(dev)}; log={dev.tail()}")


Candidate = Callable[..., Path]


@pytest.fixture
def candidate(tmp_path: Path, classifier_onnx: Path) -> Candidate:
    """Build shadowkit's bundle ``version`` (``plugin=``, ``swap=`` as ``build`` takes them)."""
    return lambda version, **kw: build(tmp_path, classifier_onnx, version, **kw)


def _served(dev: Device) -> dict[str, dict[str, Any]]:
    """The results sink with latencies and frame times removed (they differ run to run)."""
    out = {}
    for fid, pred in dev.results().items():
        pred.pop("latency_ms", None)
        pred.pop("ts", None)
        for st in pred["stages"].values():
            st.pop("latency_ms", None)
        out[fid] = pred
    return out


def test_shadow_promotes_through_trial_when_identical_candidate_agrees(
    loop: Loop, candidate: Candidate
) -> None:
    dev = loop.serving_device(shadow=SHADOW, bundle=candidate(1))
    loop.admin.publish_bundle(candidate(2), loop.keys)
    assert loop.admin.shadow_rollout("digits", 2, rule={"min_frames": 6, "min_agreement": 1.0}) == 1
    rep = wait_report(dev, "promoted", lambda r: r["status"] == "promoted", feed=(60, 200))
    stats = rep["stats"]
    assert stats["compared"] >= 6 and stats["agreed"] == stats["compared"]
    assert stats["flip_matrix"] == {"2": {"2": stats["compared"]}, "7": {"7": stats["compared"]}}
    assert rep["history"][-1]["outcome"] == "promoted"
    st = dev.wait("v2 committed", committed(2))
    assert st["previous"]["version"] == 1
    # The hub saw it and now wants v2 on this device.
    view = loop.admin.shadow()
    [mine] = view["devices"]
    assert mine["report"]["status"] == "promoted" and mine["report"]["agreement"] == 1.0
    assert "seen" not in mine["report"]
    [group] = view["cohorts"]
    assert group["agreement"] == 1.0 and group["candidate"] == {"bundle": "digits", "version": 2}
    [d] = loop.admin.devices()
    assert d["desired"] == {"bundle": "digits", "version": 2}


def test_shadow_rejects_and_shows_the_flips_when_candidate_swaps_two_labels(
    loop: Loop, candidate: Candidate
) -> None:
    dev = loop.serving_device(shadow=SHADOW, bundle=candidate(1))
    loop.admin.publish_bundle(candidate(2, swap=("2", "7")), loop.keys)
    out = subprocess.run(
        [sys.executable, "-m", "leanloop.cli", "shadow", "assign", "digits", "2",
         "--hub", loop.hub.url, "--min-frames", "4", "--min-agreement", "0.9"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "LEANLOOP_ADMIN_TOKEN": loop.hub.admin_token},
    )  # fmt: skip
    assert out.stdout.strip() == "digits v2 in shadow on 1 device(s)"
    rep = wait_report(dev, "rejected", lambda r: r["status"] == "rejected", feed=(60, 200))
    n = rep["stats"]["compared"]
    assert n >= 4 and rep["stats"]["agreed"] == 0
    assert rep["stats"]["flip_matrix"] == {"2": {"7": n}, "7": {"2": n}}
    assert "agreement 0.00%" in rep["reason"]
    st = dev.status()
    assert st["active"]["version"] == 1 and st["active"]["status"] == "committed"
    out = subprocess.run(
        [sys.executable, "-m", "leanloop.cli", "shadow", "report", "--json",
         "--state-dir", str(dev.state)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    cli = json.loads(out.stdout)
    assert cli["status"] == "rejected" and cli["stats"]["flip_matrix"] == {
        "2": {"7": n},
        "7": {"2": n},
    }
    text = subprocess.run(
        [sys.executable, "-m", "leanloop.cli", "shadow", "report", "--state-dir", str(dev.state)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "rejected" in text and "2 -> 7" in text
    # Disagreements went to the sample store with the disagreement score on the prediction,
    # and from there to the hub's queue like any sample.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        flagged = [
            m["prediction"]["shadow"]
            for m in loop.admin.samples("digits", limit=1000)
            if m["prediction"].get("shadow")
        ]
        if flagged:
            break
        time.sleep(0.2)
    assert flagged and all(s["disagreement"] == 1.0 for s in flagged)
    assert flagged[0]["candidate_labels"] == ["7", "2"]
    assert flagged[0]["candidate_version"] == 2


def test_shadow_leaves_production_output_identical_when_candidate_crashes_or_hangs(
    loop: Loop, candidate: Candidate
) -> None:
    loop.publish(1, bundle=candidate(1))
    loop.admin.publish_bundle(candidate(2, plugin="segv_on_poison"), loop.keys)
    loop.admin.publish_bundle(candidate(3, plugin="hang_on_poison"), loop.keys)
    base = loop.start_device("plain")
    cases = {
        name: (loop.start_device(name, shadow=cfg), version)
        for name, version, cfg in (("crash", 2, SHADOW), ("hang", 3, HANG_TIMEOUT))
    }
    for dev, _ in [*cases.values(), (base, 0)]:
        dev.wait("v1 committed", committed(1))
    for name, (_dev, version) in cases.items():
        loop.admin.shadow_rollout("digits", version, devices=[name], rule={"min_frames": 1000})
    for dev, _ in cases.values():
        wait_report(dev, "candidate running", lambda r: r["status"] == "running")
    frames = [(60, 200)] * 3 + [POISON] + [(60, 200)] * 3 + [POISON] + [(60, 200)] * 2
    for dev in [base, *(d for d, _ in cases.values())]:
        for levels in frames:
            dev.feed(1, levels)
    reasons = {
        "crash": "worker crashed (killed by SIGSEGV)",
        "hang": "worker hung: no answer for frame",
    }
    for name, (dev, _) in cases.items():
        rep = wait_report(dev, f"{name} disabled", lambda r: r["status"] == "disabled")
        assert reasons[name] in rep["reason"] and "\n" not in rep["reason"]
        dev.wait("all frames served", lambda st: st["counters"]["frames"] >= len(frames))
    base.wait("all frames served", lambda st: st["counters"]["frames"] >= len(frames))
    want = _served(base)
    assert len(want) == len(frames)
    for name, (dev, _) in cases.items():
        assert _served(dev) == want, name
        assert dev.status()["counters"]["frame_errors"] == 0
    reported = {d["device_id"]: d["report"] for d in loop.admin.shadow()["devices"]}
    assert reported["crash"]["status"] == reported["hang"]["status"] == "disabled"
    assert "plain" not in reported


def test_shadow_promotion_rolls_back_when_promoted_candidate_fails_its_trial(
    loop: Loop, candidate: Candidate
) -> None:
    loop.publish(1, bundle=candidate(1))
    dev = loop.start_device(shadow=SHADOW, update={"trial_frames": 3, "trial_s": 60.0})
    dev.wait("v1 on trial", lambda st: (st.get("active") or {}).get("version") == 1)
    dev.feed(3)
    dev.wait("v1 committed", committed(1))
    loop.admin.publish_bundle(candidate(2, plugin="raise_on_poison"), loop.keys)
    loop.admin.shadow_rollout("digits", 2, rule={"min_frames": 4, "min_agreement": 1.0})
    wait_report(dev, "promoting", lambda r: r["status"] == "promoting", feed=(60, 200))
    dev.wait(
        "v2 on trial",
        lambda st: st["active"]["version"] == 2 and st["active"]["status"] == "trial",
    )
    dev.feed(3, POISON)  # v2 fails on these; v1 would not
    st = dev.wait("rolled back", lambda st: st["counters"]["rollbacks"] >= 1)
    assert "trial failed" in st["last_update_error"]
    dev.wait("v1 serving", committed(1))
    rep = wait_report(dev, "rolled_back", lambda r: r["status"] == "rolled_back")
    assert rep["history"][-1]["outcome"] == "rolled_back"
    names = dev.feed(2)
    dev.wait(
        "served after rollback", lambda s: s["counters"]["frames"] >= st["counters"]["frames"] + 2
    )
    assert all(dev.results()[n]["bundle_version"] == 1 for n in names)
    # The hub heard it, and did not pin v2 on the device.
    deadline = time.monotonic() + 10
    while loop.admin.shadow()["devices"][0]["report"]["status"] != "rolled_back":
        assert time.monotonic() < deadline, loop.admin.shadow()
        time.sleep(0.2)
    [d] = loop.admin.devices()
    assert d["desired"] != {"bundle": "digits", "version": 2}


def _workers(parent: int) -> list[int]:
    """Pids of shadow worker processes whose parent is ``parent``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"runtime.shadow.worker" in cmd:
            out.append(int(d.name))
    return out


def test_shadow_resumes_and_worker_exits_when_device_is_killed_mid_shadow(
    loop: Loop, candidate: Candidate
) -> None:
    dev = loop.serving_device(shadow=SHADOW, bundle=candidate(1))
    loop.admin.publish_bundle(candidate(2), loop.keys)
    loop.admin.shadow_rollout("digits", 2, rule={"min_frames": 1000})
    before = wait_report(dev, "3 compared", lambda r: r["stats"]["compared"] >= 3, feed=(60, 200))
    [worker] = _workers(dev.proc.pid)
    dev.proc.kill()  # SIGKILL: no clean-up in the service
    dev.proc.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists():  # EOF on its pipe: the orphan ends by itself
        assert time.monotonic() < deadline, "shadow worker outlived its service"
        time.sleep(0.05)
    dev.restart()
    rep = wait_report(
        dev,
        "resumed and counting",
        lambda r: r["status"] == "running" and r["stats"]["compared"] > before["stats"]["compared"],
        feed=(60, 200),
    )
    assert rep["started"] == before["started"]  # the same measurement, continued
    assert rep["candidate"]["slot"] == before["candidate"]["slot"]
    slots = json.loads((dev.state / "slots.json").read_text())
    assert slots["slots"][rep["candidate"]["slot"]]["status"] == "staged"
    assert rep["stats"]["agreed"] == rep["stats"]["compared"]
