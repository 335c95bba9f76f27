"""Admin-side deltas: which earlier versions a new file is diffed against, and what gets signed."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import bsdiff
from hub.app import BLOBS
from hub.client import HubAdminClient, delta_bases
from hub.testing import LiveHub
from runtime.bundle.loader import read_manifest


def _model(seed: int, changed: int) -> bytes:
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(40_000))
    for i in range(changed):
        data[i * 997 % len(data)] ^= 0x5A
    return bytes(data)


def _targets(version: int, files: dict[str, str], with_manifest: bool = True) -> dict[str, Any]:
    out = {
        f"digits/{version}/{rel}": {"hashes": {"sha256": sha}, "length": 1}
        for rel, sha in files.items()
    }
    if with_manifest:
        out[f"digits/{version}/manifest.json"] = {"hashes": {"sha256": "m" * 64}, "length": 1}
    return out


def test_delta_bases_when_earlier_versions_exist_picks_two_newest_with_other_hash(
    make_bundle: Any,
) -> None:
    new = read_manifest(make_bundle("digits", 5, **{"model.onnx": b"new", "same.txt": b"x"}))
    same = new.files["same.txt"].sha256
    targets: dict[str, Any] = {}
    targets |= _targets(1, {"model.onnx": "1" * 64})
    targets |= _targets(2, {"model.onnx": "2" * 64, "same.txt": same})  # same hash: no delta
    targets |= _targets(3, {"model.onnx": "3" * 64})
    targets |= _targets(4, {"model.onnx": "4" * 64}, with_manifest=False)  # never published
    targets |= _targets(6, {"model.onnx": "6" * 64})  # newer: not a base
    targets["other/3/model.onnx"] = {"hashes": {"sha256": "7" * 64}}
    targets["digits/3/model.onnx.from-2222222222222222.lldelta"] = {"hashes": {"sha256": "d" * 6}}
    two_newest = [("digits/3/model.onnx", "3" * 64), ("digits/2/model.onnx", "2" * 64)]
    assert delta_bases(targets, new) == {"model.onnx": two_newest}
    targets["digits/3/model.onnx"] = {"hashes": {"sha256": "2" * 64}}  # each base hash once
    assert delta_bases(targets, new) == {"model.onnx": [("digits/3/model.onnx", "2" * 64)]}


def test_publish_when_file_changed_signs_delta_target_that_rebuilds_it(
    live_hub: LiveHub, keys_dir: Path, make_bundle: Any
) -> None:
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    v1, v2 = _model(1, 0), _model(1, 30)
    admin.publish_bundle(make_bundle("digits", 1, **{"model.onnx": v1, "big.bin": b"a"}), keys_dir)
    # big.bin changes completely: its patch is not under 90% of the file, so no delta.
    rand = random.Random(7).randbytes(5000)
    admin.publish_bundle(make_bundle("digits", 2, **{"model.onnx": v2, "big.bin": rand}), keys_dir)
    targets = json.loads(admin.current_targets() or b"")["signed"]["targets"]
    deltas = {p: t for p, t in targets.items() if p.endswith(".lldelta")}
    base = hashlib.sha256(v1).hexdigest()
    assert list(deltas) == [f"digits/2/model.onnx.from-{base[:16]}.lldelta"]
    info = next(iter(deltas.values()))
    assert info["custom"]["leanloop"] == {
        "delta_of": "model.onnx",
        "base_sha256": base,
        "result_sha256": hashlib.sha256(v2).hexdigest(),
    }
    assert info["length"] < 0.9 * len(v2)
    patch = live_hub.app[BLOBS].read(info["hashes"]["sha256"])
    assert bsdiff.apply_patch(v1, patch) == v2


def test_delta_bases_when_devices_run_an_older_version_adds_it(make_bundle: Any) -> None:
    new = read_manifest(make_bundle("digits", 5, **{"model.onnx": b"new"}))
    targets: dict[str, Any] = {}
    for v in (1, 2, 3, 4):
        targets |= _targets(v, {"model.onnx": str(v) * 64})
    got = delta_bases(targets, new, running=[1, 4, 9])  # 9: not published, ignored
    assert got == {
        "model.onnx": [
            ("digits/4/model.onnx", "4" * 64),
            ("digits/3/model.onnx", "3" * 64),
            ("digits/1/model.onnx", "1" * 64),
        ]
    }
