"""A real device updates changed files through signed deltas, and falls back to the full files
when the delta blobs on the hub are corrupted (TUF rejects them at download).

The kit's detector is tiny (a few hundred bytes), so each bundle also carries a 400 KB data
file that changes in 64 bytes between v1 and v2: that is where the bytes saved show.
"""

from __future__ import annotations

import random
import re

from loopkit import BOXES, BOXES_NEW, Device, Loop, committed, delta_targets, flip_blob_byte

from runtime.bundle.loader import file_sha256, read_manifest

DETECTOR = "models/detector.onnx"
DATA = "anchors.bin"
DATA_V1 = random.Random(4).randbytes(400_000)
DATA_V2 = bytes(b ^ 0x33 if i % 6007 == 0 else b for i, b in enumerate(DATA_V1))


def _counts(log: str) -> tuple[int, int]:
    """(files by delta, delta fallbacks) from the device's "staged ... v2" log line."""
    m = re.search(r"staged digits v2 .*?(\d+) by delta, (\d+) delta fallbacks", log)
    assert m is not None, log
    return int(m.group(1)), int(m.group(2))


def _update_to_v2(loop: Loop, corrupt_deltas: bool) -> tuple[Device, int, int]:
    """Serve v1, publish v2 (detector and data changed), roll it out.

    Returns (device, bytes downloaded for v2, number of delta targets of v2).
    """
    dev = loop.serving_device(bundle=loop.make_bundle(1, BOXES, extra={DATA: DATA_V1}))
    first = dev.status()["counters"]["bytes_downloaded"]
    v2 = loop.make_bundle(2, BOXES_NEW, extra={DATA: DATA_V2})
    loop.admin.publish_bundle(v2, loop.keys)
    manifest = read_manifest(v2)
    n_deltas = 0
    for rel in manifest.files:
        for info in delta_targets(loop.admin, manifest.target_name(rel)).values():
            n_deltas += 1
            assert info["custom"]["leanloop"]["result_sha256"] == manifest.files[rel].sha256
            assert info["length"] < 0.9 * manifest.files[rel].size
            if corrupt_deltas:
                flip_blob_byte(loop.hub, info["hashes"]["sha256"])
    assert delta_targets(loop.admin, f"digits/2/{DETECTOR}")
    assert delta_targets(loop.admin, f"digits/2/{DATA}")
    loop.admin.rollout("digits", 2)
    dev.feed(4)
    st = dev.wait("v2 committed", committed(2))
    slot = dev.state / "slots" / st["active"]["slot"]
    for rel, entry in manifest.files.items():
        assert file_sha256(slot / rel) == entry.sha256
    assert not list(slot.rglob("*.lldelta"))
    return dev, st["counters"]["bytes_downloaded"] - first, n_deltas


def test_device_fetches_changed_files_through_deltas_when_v2_is_published(loop: Loop) -> None:
    dev, v2_bytes, n_deltas = _update_to_v2(loop, corrupt_deltas=False)
    print(f"v2 through deltas: {v2_bytes} bytes (data file {len(DATA_V2)} bytes)")
    assert v2_bytes < len(DATA_V2) // 10
    assert _counts(dev.tail()) == (n_deltas, 0)


def test_device_falls_back_to_full_files_when_delta_blobs_are_corrupted(loop: Loop) -> None:
    dev, v2_bytes, n_deltas = _update_to_v2(loop, corrupt_deltas=True)
    print(f"v2 after delta fallbacks: {v2_bytes} bytes (data file {len(DATA_V2)} bytes)")
    assert v2_bytes > len(DATA_V2)
    log = dev.tail()
    assert f"delta for {DETECTOR} failed" in log and f"delta for {DATA} failed" in log
    assert _counts(log) == (0, n_deltas)
