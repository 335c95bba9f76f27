"""The installer, driven step by step on one thread: real bundles signed and served by a real
hub on loopback, fetched through TUF by the real :class:`BundleFetcher`, loaded on the real
ONNX Runtime. The test plays both the frame loop (``between_frames``/``frame_served``) and the
update thread (``update_to``/``advance``), so every hand-over is deterministic."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))
from loopkit import write_source
from pipeline_models import export_brightness_classifier

from hub.client import HubAdminClient
from hub.config import HubConfig
from hub.signing import init_keys
from hub.testing import LiveHub
from runtime.bundle.build import build_bundle
from runtime.bundle.loader import file_sha256, load_bundle
from runtime.config import DeviceConfig
from runtime.errors import UpdateError
from runtime.protocol import ReportKind
from runtime.trust import BundleFetcher
from runtime.update.installer import Installer
from runtime.update.machine import InstallState

BOXES = [(25.0, 25.0, 30.0, 30.0), (70.0, 70.0, 40.0, 40.0)]
BOXES_NEW = [(25.0, 25.0, 28.0, 28.0), (70.0, 70.0, 38.0, 38.0)]


def _bad_golden(bundle: Path) -> None:
    """Spoil the golden expectations and re-list the file: a consistent, signable bundle whose
    health check fails on the device."""
    path = bundle / "golden" / "expected.json"
    exp = json.loads(path.read_text())
    for stages in exp.values():
        for item in stages["classifier"]["items"]:
            item["score"] = 1.0 - item["score"]
    path.write_text(json.dumps(exp))
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["golden/expected.json"] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))


class Fleet:
    """One hub with digits v1..v4 published (v3's health check fails) and a device token."""

    def __init__(self, root: Path, hub: LiveHub, keys: Path, token: str) -> None:
        self.root, self.hub, self.keys, self.token = root, hub, keys, token
        self.n = 0

    def fetcher(self, state: Path) -> CountingFetcher:
        return CountingFetcher(
            BundleFetcher(state / "tuf", self.keys / "root.json", self.hub.url, self.token)
        )

    def installer(self, **update: Any) -> tuple[Installer, CountingFetcher]:
        self.n += 1
        state = self.root / f"device-{self.n}"
        cfg = DeviceConfig(
            state_dir=state,
            update={"trial_frames": 2, "trial_s": 60.0, **update},
            hub={"poll_interval_s": 0.01},
        )
        state.mkdir(parents=True)
        return Installer(cfg), self.fetcher(state)


class CountingFetcher:
    """The real fetcher, counting its calls (to see a staged candidate reused, not fetched)."""

    def __init__(self, real: BundleFetcher) -> None:
        self.real = real
        self.calls = 0

    def fetch(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.real.fetch(*a, **kw)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("installer")
    keys = root / "keys"
    init_keys(keys)
    clf = export_brightness_classifier(root / "classifier.onnx", batch=None)
    cfg = HubConfig(data_dir=root / "hub", port=0, keys_dir=keys, timestamp_check_interval_s=3600)
    with LiveHub(cfg) as hub:
        admin = HubAdminClient(hub.url, hub.admin_token)
        for version, boxes in [(1, BOXES), (2, BOXES_NEW), (3, BOXES), (4, BOXES_NEW)]:
            src = write_source(root / f"src-v{version}", boxes, clf)
            out = root / f"bundle-v{version}"
            build_bundle(src, out, name="digits", version=version)
            if version == 3:
                _bad_golden(out)
            admin.publish_bundle(out, keys)
        body = {"device_id": "cam-1", "enroll_token": hub.enroll_token}
        resp = urllib3.request("POST", f"{hub.url}/api/v1/enroll", json=body, timeout=5.0)
        assert resp.status == 200, resp.data
        yield Fleet(root, hub, keys, str(resp.json()["device_token"]))


def _serve(inst: Installer, frames: int, failed: bool = False) -> None:
    """The frame loop: ``frames`` frames, each between two ``between_frames`` calls."""
    for _ in range(frames):
        assert inst.between_frames() is not None
        inst.frame_served(failed)
    inst.between_frames()


def _install(inst: Installer, fetcher: CountingFetcher, version: int) -> None:
    inst.update_to("digits", version, fetcher)
    _serve(inst, 2)
    inst.advance()


def _active(inst: Installer) -> tuple[int | None, str]:
    act = inst.slots.state.active
    assert act is not None
    info = inst.slots.info(act)
    return info.version, info.status


def test_installer_commits_after_trial_when_update_is_sound(fleet: Fleet) -> None:
    inst, fetcher = fleet.installer()
    assert inst.start() is None  # nothing installed yet
    inst.update_to("digits", 1, fetcher)
    assert inst.machine.state is InstallState.SWAPPING  # handed over, not yet swapped
    assert inst.busy
    served = inst.between_frames()
    assert served is not None and served.manifest.version == 1
    inst.advance()
    assert inst.machine.state is InstallState.TRIAL
    assert _active(inst) == (1, "trial")
    _serve(inst, 2)
    inst.advance()
    assert inst.machine.state is InstallState.COMMITTED
    assert _active(inst) == (1, "committed")
    assert not inst.busy
    assert inst.counters["updates"] == 1
    inst.update_to("digits", 1, fetcher)  # what runs already: nothing fetched
    assert fetcher.calls == 1
    inst.close()


def test_installer_rolls_back_and_reports_when_trial_errors(fleet: Fleet) -> None:
    inst, fetcher = fleet.installer()
    inst.start()
    _install(inst, fetcher, 1)
    inst.update_to("digits", 2, fetcher)
    _serve(inst, 2, failed=True)  # every frame fails on v2
    served = inst.between_frames()
    assert served is not None and served.manifest.version == 1  # swapped straight back
    inst.advance()
    assert inst.machine.state is InstallState.ROLLED_BACK
    assert _active(inst) == (1, "committed")
    assert 2 in inst.slots.state.bad_versions["digits"]
    [report] = inst.reports.pending()
    assert (report.kind, report.cause, report.version) == (
        ReportKind.ROLLED_BACK,
        "trial_failed",
        2,
    )
    assert "error rate 100%" in report.reason
    inst.update_to("digits", 2, fetcher)  # failed here before: not fetched again
    assert fetcher.calls == 2
    inst.close()


def test_installer_refuses_and_keeps_serving_when_health_check_fails(fleet: Fleet) -> None:
    inst, fetcher = fleet.installer()
    inst.start()
    _install(inst, fetcher, 2)
    inst.update_to("digits", 3, fetcher)
    assert inst.machine.state is InstallState.FAILED
    assert not inst.busy
    served = inst.between_frames()
    assert served is not None and served.manifest.version == 2  # never stopped serving v2
    assert _active(inst) == (2, "committed")
    spare = inst.slots.inactive()
    assert inst.slots.info(spare).status == "empty"
    assert not inst.slots.dir(spare).exists()  # the half-installed slot is wiped
    assert 3 in inst.slots.state.bad_versions["digits"]
    [report] = inst.reports.pending()
    assert (report.kind, report.cause) == (ReportKind.UPDATE_FAILED, "health_check_failed")
    assert inst.last_error is not None and "digits v3 refused" in inst.last_error
    inst.close()


def _pump_until(inst: Installer, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Play both loops until ``done``."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        inst.advance()
        inst.between_frames()
        time.sleep(0.01)


def test_installer_serves_operator_rollback_between_two_frames(fleet: Fleet) -> None:
    inst, fetcher = fleet.installer()
    inst.start()
    _install(inst, fetcher, 1)
    _install(inst, fetcher, 2)
    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            answer["ok"] = inst.request_rollback(timeout=20)
        except UpdateError as e:
            answer["error"] = str(e)

    t = threading.Thread(target=ask)
    t.start()
    _pump_until(inst, lambda: bool(answer))
    t.join()
    assert answer == {"ok": "rolled back to digits v1 (slot a)"}
    served = inst.between_frames()
    assert served is not None and served.manifest.version == 1
    assert inst.machine.state is InstallState.ROLLED_BACK
    [report] = inst.reports.pending()
    assert (report.kind, report.cause, report.version) == (ReportKind.ROLLED_BACK, "operator", 2)
    again: dict[str, Any] = {}
    t = threading.Thread(target=lambda: again.update(r=_try_rollback(inst)))
    t.start()
    _pump_until(inst, lambda: bool(again))
    t.join()
    assert "no previous committed bundle" in str(again["r"])  # v1 has nothing before it
    # An operator's rollback is not a failure: v2 is held back, not marked bad ...
    assert inst.status()["rolled_back_by_operator"] is True
    assert inst.status()["held_back"] == {"digits": [2]}
    assert "digits" not in inst.slots.state.bad_versions
    calls = fetcher.calls
    inst.update_to("digits", 2, fetcher)  # ... and not installed again while the hub wants it
    assert fetcher.calls == calls and inst.last_error is None
    _install(inst, fetcher, 4)  # a newer version goes as usual
    assert _active(inst) == (4, "committed")
    inst.close()


def _try_rollback(inst: Installer) -> Exception | str:
    try:
        return inst.request_rollback(timeout=20)
    except UpdateError as e:
        return e


def test_installer_stages_candidate_keeps_it_over_restart_and_promotes_it(fleet: Fleet) -> None:
    inst, fetcher = fleet.installer()
    inst.start()
    _install(inst, fetcher, 1)
    slot = inst.stage_candidate("digits", 2, fetcher)
    assert inst.machine.state is InstallState.SHADOW_STAGED
    assert not inst.busy  # production updates may still start
    assert inst.slots.info(slot).status == "staged"
    assert _active(inst) == (1, "committed")
    inst.close()

    again = Installer(inst.cfg)  # a restart: the staged candidate is not wiped
    again.start()
    assert again.slots.info(slot).status == "staged"
    assert again.stage_candidate("digits", 2, fetcher) == slot
    assert fetcher.calls == 2  # reused, not fetched again
    loaded = load_bundle(again.slots.dir(slot), again.cfg.inference.backend, again.options)
    again.promote(slot, loaded)
    _serve(again, 2)
    again.advance()
    _serve(again, 0)
    again.advance()
    assert again.machine.state is InstallState.COMMITTED
    assert _active(again) == (2, "committed")
    again.close()


def test_installer_marks_candidate_bad_and_wipes_slot_when_it_cannot_be_staged(
    fleet: Fleet,
) -> None:
    inst, fetcher = fleet.installer()
    inst.start()
    _install(inst, fetcher, 1)
    with pytest.raises(UpdateError, match="not in the signed targets metadata"):
        inst.stage_candidate("digits", 9, fetcher)  # never published: retried later, not bad
    assert inst.machine.state is InstallState.FAILED
    assert "digits" not in inst.slots.state.bad_versions
    spare = inst.slots.inactive()
    assert inst.slots.info(spare).status == "empty"
    assert _active(inst) == (1, "committed")
    inst.close()
