"""Shared kit for integration tests: real bundles, a real hub on loopback, real devices.

Bundles are built from small real ONNX models (a constant-box YOLOv8-layout detector and a
brightness classifier exported with torch, the same builders the pipeline tests use), signed
with real TUF keys, served by the real hub app, and installed by real device processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime" / "pipeline"))
from pipeline_models import (
    export_brightness_classifier,
    make_constant_detector,
    yolo_v8_preds,
)

from hub.app import BLOBS
from hub.client import HubAdminClient
from hub.config import HubConfig
from hub.signing import init_keys
from hub.testing import LiveHub
from runtime.bundle.build import build_bundle

# The detector's constant boxes (x, y, w, h) of a bundle, and of the next version: the boxes
# differ, so the detector file changes and the classifier stays byte-identical.
BOXES = [(25.0, 25.0, 30.0, 30.0), (70.0, 70.0, 40.0, 40.0)]
BOXES_NEW = [(25.0, 25.0, 28.0, 28.0), (70.0, 70.0, 38.0, 38.0)]

PIPELINE = {
    "format": "leanloop.pipeline/1",
    "stages": [
        {
            "name": "detector",
            "model": "detector",
            "pre": {"resize": [96, 96], "color": "gray", "scale": 1 / 255},
            "post": {
                "type": "yolo_v8",
                "score_threshold": 0.3,
                "nms_iou": 0.3,
                "class_agnostic": True,
                "classes": ["digit"],
            },
        },
        {
            "name": "classifier",
            "model": "classifier",
            "for_each": "detector",
            "crop": {"margin": 0.0},
            "pre": {"resize": [28, 28], "color": "gray", "scale": 1 / 255},
            "post": {"type": "softmax", "top_k": 3},
        },
    ],
}


def painted_frame(levels: tuple[int, int] = (60, 200)) -> np.ndarray:
    """A 96×96 frame with two patches whose brightness the classifier reads as a class."""
    img = np.zeros((96, 96, 3), np.uint8)
    img[10:40, 10:40] = levels[0]
    img[50:90, 50:90] = levels[1]
    return img


def write_source(
    folder: Path, boxes: list[tuple[float, float, float, float]], classifier: Path
) -> Path:
    (folder / "models").mkdir(parents=True)
    (folder / "golden").mkdir()
    make_constant_detector(
        folder / "models" / "detector.onnx", yolo_v8_preds([(*b, [0.9]) for b in boxes])
    )
    (folder / "models" / "classifier.onnx").write_bytes(classifier.read_bytes())
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(PIPELINE))
    (folder / "ontology.yaml").write_text(
        yaml.safe_dump({"id": "digits", "version": 1, "classes": [str(i) for i in range(10)]})
    )
    cv2.imwrite(str(folder / "golden" / "000.png"), painted_frame())
    return folder


@pytest.fixture(scope="session")
def classifier_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clf")
    return export_brightness_classifier(d / "classifier.onnx", batch=None)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def live_hub(tmp_path: Path, keys: Path) -> Iterator[LiveHub]:
    cfg = HubConfig(
        data_dir=tmp_path / "hub", port=0, keys_dir=keys, timestamp_check_interval_s=3600
    )
    with LiveHub(cfg) as hub:
        yield hub


@pytest.fixture
def admin(live_hub: LiveHub) -> HubAdminClient:
    return HubAdminClient(live_hub.url, live_hub.admin_token)


BundleMaker = Callable[..., Path]


def delta_targets(admin: HubAdminClient, file_target: str) -> dict[str, dict[str, Any]]:
    """The signed delta targets (path → target info) that rebuild ``file_target``."""
    targets = json.loads(admin.current_targets() or b"{}")["signed"]["targets"]
    prefix = f"{file_target}.from-"
    return {p: t for p, t in targets.items() if p.startswith(prefix) and p.endswith(".lldelta")}


def flip_blob_byte(hub: LiveHub, sha256: str) -> None:
    """Corrupt a blob in the hub's store in place (one byte in the middle)."""
    blob = hub.app[BLOBS].path(sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


@pytest.fixture
def make_bundle(tmp_path: Path, classifier_onnx: Path) -> BundleMaker:
    def make(
        version: int,
        boxes: list[tuple[float, float, float, float]],
        extra: dict[str, bytes] | None = None,
    ) -> Path:
        src = write_source(tmp_path / f"src-v{version}", boxes, classifier_onnx)
        for rel, data in (extra or {}).items():
            (src / rel).write_bytes(data)
        out = tmp_path / f"bundle-v{version}"
        build_bundle(src, out, name="digits", version=version)
        return out

    return make


def committed(version: int) -> Callable[[dict[str, Any]], bool]:
    """A status predicate: ``version`` is active and committed."""
    return lambda st: (
        (st.get("active") or {}).get("version") == version
        and (st["active"]["status"] == "committed")
    )


def publish(admin: HubAdminClient, keys: Path, bundle: Path, version: int) -> None:
    """Sign and publish a built bundle, then roll it out to the whole fleet."""
    admin.publish_bundle(bundle, keys)
    admin.rollout("digits", version)


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``cond`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Device:
    """A real device process (``leanloop device run``) with its own state dir."""

    def __init__(
        self,
        root: Path,
        hub: LiveHub,
        trust_root: Path,
        device_id: str = "cam-1",
        env: dict[str, str] | None = None,
        cohort: str | None = None,
        **overrides: Any,
    ) -> None:
        self.dir = root / device_id
        self.inbox = self.dir / "inbox"
        self.state = self.dir / "state"
        self.inbox.mkdir(parents=True)
        cfg: dict[str, Any] = {
            "device_id": device_id,
            "state_dir": str(self.state),
            "root": str(trust_root),
            "hub": {
                "url": hub.url,
                "enroll_token": hub.enroll_token,
                "poll_interval_s": 0.3,
                "cohort": cohort,
            },
            "source": {"path": str(self.inbox), "pattern": "*.png", "poll_interval_s": 0.05},
            "upload": {"interval_s": 0.3},
            "update": {"trial_frames": 2, "trial_s": 1.0},
            # Tests drop a handful of frames and expect each to be a candidate, as in a replay:
            # no write slots (the device default keeps the best frame of each second).
            "store": {"max_rate": 0},
        }
        cfg.update(overrides)
        self.config = self.dir / "device.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self._n = 0
        self.log = open(self.dir / "device.log", "wb")  # noqa: SIM115
        self.proc = self._spawn(env)

    def _spawn(self, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "leanloop.cli", "device", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def restart(self, env: dict[str, str] | None = None) -> None:
        """Start the device process again on the same state (after it stopped or was killed)."""
        assert self.proc.poll() is not None, "still running"
        self.proc = self._spawn(env)

    def reconfigure(self, **sections: Any) -> None:
        """Stop the device, replace these top-level sections of its config, start it again."""
        self.stop(close_log=False)
        cfg = yaml.safe_load(self.config.read_text())
        cfg.update(sections)
        self.config.write_text(yaml.safe_dump(cfg))
        self.restart()

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the process to end by itself (e.g. a test hook's SIGKILL); its return code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"device did not exit; log={self.tail()}") from None

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def wait(
        self, what: str, cond: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"device exited ({self.proc.returncode}): {self.tail()}")
            st = self.status()
            if st and cond(st):
                return st
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what}; status={self.status()}; log={self.tail()}"
        )

    def tail(self) -> str:
        return (self.dir / "device.log").read_text()[-3000:]

    def feed(self, n: int, levels: tuple[int, int] = (60, 200)) -> list[str]:
        names = []
        for _ in range(n):
            name = f"f{self._n:06d}.png"
            self._n += 1
            tmp = self.inbox / f".{name}"
            cv2.imwrite(str(tmp.with_suffix(".png")), painted_frame(levels))
            tmp.with_suffix(".png").rename(self.inbox / name)
            names.append(name)
        return names

    def results(self) -> dict[str, dict[str, Any]]:
        p = self.state / "results.jsonl"
        out = {}
        if p.exists():
            for line in p.read_text().splitlines():
                d = json.loads(line)
                out[d["frame_id"]] = d
        return out

    def stop(self, close_log: bool = True) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if close_log:
            self.log.close()


@pytest.fixture
def start_device(tmp_path: Path, live_hub: LiveHub, keys: Path) -> Iterator[Callable[..., Device]]:
    devices: list[Device] = []

    def start(
        device_id: str = "cam-1",
        env: dict[str, str] | None = None,
        cohort: str | None = None,
        **overrides: Any,
    ) -> Device:
        d = Device(
            tmp_path / "devices", live_hub, keys / "root.json", device_id, env, cohort, **overrides
        )
        devices.append(d)
        return d

    yield start
    for d in devices:
        d.stop()


@dataclass
class Loop:
    """What most integration tests begin with: the live hub, its admin client, the signing
    keys, and the bundle and device makers of the test."""

    hub: LiveHub
    admin: HubAdminClient
    keys: Path
    make_bundle: BundleMaker
    start_device: Callable[..., Device]

    def publish(
        self,
        version: int,
        boxes: list[tuple[float, float, float, float]] = BOXES,
        bundle: Path | None = None,
    ) -> Path:
        """Sign ``bundle`` (default: build one with ``boxes``) as ``version`` and roll it out
        to the whole fleet; the bundle folder."""
        bundle = bundle if bundle is not None else self.make_bundle(version, boxes)
        publish(self.admin, self.keys, bundle, version)
        return bundle

    def serving_device(self, *args: Any, bundle: Path | None = None, **overrides: Any) -> Device:
        """Publish v1 (``bundle``, default built from ``BOXES``), start a device with
        ``start_device(*args, **overrides)`` and return it once v1 is committed on it."""
        self.publish(1, bundle=bundle)
        dev = self.start_device(*args, **overrides)
        dev.wait("v1 committed", committed(1))
        return dev

    def signed_bundle(self, version: int = 1) -> tuple[Path, Path]:
        """Build and sign bundle ``version`` (no rollout); the bundle folder and a copy of the
        signed targets metadata beside it, as ``bundle verify --targets`` reads it."""
        bundle = self.make_bundle(version, BOXES)
        self.admin.publish_bundle(bundle, self.keys)
        targets = bundle.parent / f"targets-v{version}.json"
        targets.write_bytes(self.admin.current_targets() or b"")
        return bundle, targets


@pytest.fixture
def loop(
    live_hub: LiveHub,
    admin: HubAdminClient,
    keys: Path,
    make_bundle: BundleMaker,
    start_device: Callable[..., Device],
) -> Loop:
    return Loop(live_hub, admin, keys, make_bundle, start_device)
