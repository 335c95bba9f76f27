"""A real full disk under the sample store: a clear one-line error, eviction first, and the store
(and its writer) keep working — on a small tmpfs in a private mount namespace, so the ENOSPC is
the kernel's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil.diskfull import in_tmpfs, unshare_prefix

UNSHARE = unshare_prefix()
pytestmark = pytest.mark.skipif(
    UNSHARE is None, reason="needs unshare --mount and tmpfs mounts (not permitted here)"
)

TMPFS_K = 3072  # the "disk": 3 MiB, far below the store's 64 MiB cap

SCRIPT = r"""
import json, os, random, sys, threading, time
from pathlib import Path
import numpy as np
from runtime.errors import StoreError
from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.sampling import make_scorer
from runtime.store.lmdb_store import SampleStore
from runtime.store.record import Feedback, SampleRecord, new_sample_id
from runtime.store.writer import StoreWriter

disk = Path(sys.argv[1])
rng = random.Random(5)
ballast = disk / "ballast"  # something else on the disk: deleted later to give room back
ballast.write_bytes(os.urandom(512 * 1024))

def rec(p):
    return SampleRecord(
        id=new_sample_id(), device_id="d", created=time.time(), frame_id="f", bundle="digits",
        bundle_version=1, ontology_version=1, image=os.urandom(20_000), image_format="jpeg",
        prediction={"frame_id": "f", "stages": {}}, scores={"margin": p}, priority=p,
    )

store = SampleStore(disk / "samples", max_bytes=64 << 20)
keep = rec(0.01)
store.put(keep)
store.set_feedback(keep.id, Feedback("correct", "7", "ana", 1.0, 1))  # protected
def insert(n, out):
    for i in range(n):
        p = rng.random()
        try:
            out["events"].append(["ok" if store.put(rec(p)) else "rejected", p])
        except StoreError as e:
            out["events"].append(["error", p])
            out["errors"].append(str(e))

# 1. The store grows into a disk that fills up: it adapts before the kernel says no.
out = {"events": [], "errors": []}
insert(300, out)
st = store.stats()
out["cap_while_full"], out["max_bytes"] = st["cap"], st["max_bytes"]
out["kept"] = [r.priority for r in store.top(10_000)]
out["protected_kept"] = store.get(keep.id) is not None

# 2. Something else takes every byte left at once: a clear error, then eviction within the file.
with open(disk / "filler", "wb") as f:
    try:
        while True:
            f.write(os.urandom(64 * 1024))
            f.flush()
    except OSError:
        pass
sudden = {"events": [], "errors": []}
insert(100, sudden)
out["sudden"] = sudden
out["count_after_sudden"] = store.stats()["count"]

# The writer on the full disk (still full: the filler is there).
item = Item(class_id=0, label="0", score=0.5, scores=[0.5, 0.5])
w = StoreWriter(store, make_scorer({"random": 1.0}), "d", seed=3)
frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
stages = {"s": StageResult("s", "classification", [item], 1.0)}
for i in range(60):
    w.offer(frame, Prediction(frame_id=f"w{i}", stages=stages))
out["writer_drained"] = w.close(timeout=30)
out["writer"] = w.stats()

# Room again: the cap comes back at the next write and the store grows.
before = store.stats()["count"]
ballast.unlink()
(disk / "filler").unlink()
for i in range(10):
    store.put(rec(0.999))
out["cap_after_room"] = store.stats()["cap"]
out["grew"] = store.stats()["count"] - before
store.close()
store = SampleStore(disk / "samples", max_bytes=64 << 20)
out["check"] = store.check()
out["data_bytes"] = (disk / "samples" / "data.mdb").stat().st_size
store.close()
print(json.dumps(out))
"""


def test_store_evicts_within_its_file_and_keeps_working_when_the_disk_is_full(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "fill.py"
    script.write_text(SCRIPT)
    assert UNSHARE is not None
    r = subprocess.run(
        in_tmpfs(UNSHARE, disk, TMPFS_K, [sys.executable, str(script), str(disk)]),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # 1. Filling up gradually: no error at all, the cap in force drops, the best stay.
    assert out["errors"] == []
    assert out["cap_while_full"] < out["max_bytes"] // 10
    assert sum(what == "ok" for what, _ in out["events"]) > 150  # evicting, not refusing all
    assert out["protected_kept"]  # a corrected sample survives the full disk
    kept = sorted(out["kept"], reverse=True)
    assert kept[0] == pytest.approx(1.01)  # the corrected sample (1 + 0.01), at the top
    assert len(kept) > 20 and sum(kept[1:]) / len(kept[1:]) > 0.7  # the best of U(0, 1)
    # 2. Someone else takes the disk's last byte at once: one clear line (nothing written),
    # the store evicts within its file, and better samples get in again.
    sudden = out["sudden"]
    assert 1 <= len(sudden["errors"]) <= 2
    assert all(
        "disk full" in e and "nothing was written" in e and "\n" not in e for e in sudden["errors"]
    )
    first = next(i for i, (what, _) in enumerate(sudden["events"]) if what == "error")
    assert sum(what == "ok" for what, _ in sudden["events"][first + 1 :]) >= 3
    assert out["count_after_sudden"] > 10
    # The writer survives it; room again brings the cap back; the store is consistent.
    assert out["writer_drained"] and out["writer"]["offered"] == 60
    assert out["writer"]["stored"] > 0  # frames still go in on the full disk
    assert out["cap_while_full"] < out["cap_after_room"] < out["max_bytes"]  # a 3 MiB disk
    assert out["grew"] > 0
    assert out["check"] == []
    assert out["data_bytes"] <= TMPFS_K * 1024
