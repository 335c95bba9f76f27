"""kill -9 in the middle of sustained writes: nothing acknowledged is lost, nothing is torn.

A real child process opens the store and puts records in a loop, printing each id to stdout
(flushed) only after ``put`` returned — that line is the store's promise. The parent SIGKILLs
it mid-stream, re-opens the store and checks: every promised id is there, and the priority
index and the byte/pending counters agree with the records (both through ``check()`` and by
reading the raw LMDB sub-databases).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest

from runtime.store.lmdb_store import ClassQuota, SampleStore

REPO = Path(__file__).resolve().parents[3]

CHILD = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    from runtime.errors import StoreError
    from runtime.store.lmdb_store import ClassQuota, SampleStore
    from runtime.store.record import Feedback, SampleRecord, new_sample_id

    path, max_bytes, every_fb = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(int(sys.argv[4]))
    batch, metasync = int(sys.argv[5]), sys.argv[6] == "1"
    quotas = {"3": ClassQuota(max_count=4)} if every_fb else {}
    store = SampleStore(
        path, max_bytes=max_bytes, quotas=quotas, random_share=0.2, metasync=metasync
    )
    i = 0
    while True:
        recs = []
        for _ in range(batch):
            label = str(rng.randint(0, 4))
            item = {"class_id": 0, "label": label, "score": 0.5}
            stages = {"c": {"kind": "classification", "items": [item], "latency_ms": 1.0}}
            recs.append(SampleRecord(
                id=new_sample_id(), device_id="crash", created=float(i), frame_id=f"f{i}",
                bundle="b", bundle_version=1, ontology_version=1,
                image=rng.randbytes(rng.randint(500, 9000)), image_format="jpeg",
                prediction={"frame_id": f"f{i}", "stages": stages}, scores={"random": 0.0},
                priority=rng.random(), random_slice=every_fb > 0 and rng.random() < 0.1,
            ))
        done = store.put_many(recs)
        for rec, ok in zip(recs, done):
            print(("put " if ok else "rej ") + rec.id, flush=True)
        rid, ok = recs[-1].id, done[-1]
        if every_fb and i % every_fb == 0 and ok:
            try:
                store.set_feedback(rid, Feedback("correct", "1", "t", 0.0, 1))
                print("fb " + rid, flush=True)
            except StoreError:
                pass
        if every_fb and i % 7 == 3:
            gone = [r.id for r in store.top(2) if r.feedback is None]
            store.release(gone)
            for g in gone:
                print("rel " + g, flush=True)
        i += 1
    """
)


def run_and_kill(
    path: Path, max_bytes: int, every_fb: int, kill_after: int, batch: int, metasync: bool
) -> list[str]:
    """Start the writer child, SIGKILL it after ``kill_after`` acknowledgements."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(path),
            str(max_bytes),
            str(every_fb),
            "42",
            str(batch),
            str(int(metasync)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while len(lines) < kill_after:
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"child died early: {err[-2000:]}")
            lines.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    lines.extend(rest.splitlines(keepends=True))
    # Only whole lines are promises; a torn last line was never acknowledged.
    return [ln.strip() for ln in lines if ln.endswith("\n")]


def raw_consistency(path: Path, max_bytes: int) -> None:
    """Read the sub-databases directly, without the store's own code."""
    env = lmdb.open(str(path), subdir=True, max_dbs=6, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            chunks = [k for k, _ in txn.cursor(db=env.open_db(b"records", txn, create=False))]
            prio = dict(txn.cursor(db=env.open_db(b"prio", txn, create=False)))
            rslice = dict(txn.cursor(db=env.open_db(b"rslice", txn, create=False)))
            meta = dict(txn.cursor(db=env.open_db(b"meta", txn, create=False)))
    finally:
        env.close()
    per_id: dict[bytes, int] = {}
    for k in chunks:
        per_id[k[:-2]] = per_id.get(k[:-2], 0) + 1
    entries = {k[8:]: v for k, v in prio.items()}
    assert sorted(entries) == sorted(per_id)
    assert all(int.from_bytes(v[1:3], "big") == per_id[rid] for rid, v in entries.items())
    random_ids = {rid for rid, v in entries.items() if v[0] & 0x04}
    assert random_ids == set(rslice)
    total = sum(int.from_bytes(v[3:7], "big") for v in entries.values())
    assert int.from_bytes(meta.get(b"bytes", b"\0"), "big") == total
    assert total <= max_bytes


@pytest.mark.parametrize(
    ("case", "max_bytes", "every_fb", "kill_after", "batch", "metasync"),
    [
        ("plain puts, no eviction", 64 << 20, 0, 300, 1, True),
        ("eviction, quota, random slice, feedback and releases", 600_000, 20, 400, 1, True),
        ("batched puts with eviction", 800_000, 9, 400, 4, True),
        ("one disk sync per commit (sync: data)", 600_000, 20, 300, 2, False),
        ("killed early", 600_000, 5, 7, 1, True),
    ],
)
def test_store_keeps_every_acknowledged_record_when_writer_is_killed(
    tmp_path: Path,
    case: str,
    max_bytes: int,
    every_fb: int,
    kill_after: int,
    batch: int,
    metasync: bool,
) -> None:
    path = tmp_path / "samples"
    lines = run_and_kill(path, max_bytes, every_fb, kill_after, batch, metasync)
    put = [ln[4:] for ln in lines if ln.startswith("put ")]
    feedback = {ln[3:] for ln in lines if ln.startswith("fb ")}
    released = {ln[4:] for ln in lines if ln.startswith("rel ")}
    assert put, case

    store = SampleStore(path, max_bytes=max_bytes, quotas={"3": ClassQuota(max_count=4)})
    try:
        assert store.check() == [], case
        if every_fb:
            assert store.class_stats().get("3", {"count": 0})["count"] <= 4, case
        present = {r.id for r in store.top(10_000, state=None)}
        assert store.stats()["count"] == len(present)
        if every_fb == 0:
            assert set(put) <= present, case  # nothing may be evicted: all promises hold
        else:
            assert feedback - released <= present, case  # protected records survive
            assert not released & present, case
            for sid in feedback:
                got = store.get(sid)
                assert got is not None and got.feedback is not None
        # The re-opened store keeps working.
        assert store.release(list(present)[:1]) in (0, 1)
        assert store.check() == []
    finally:
        store.close()
    raw_consistency(path, max_bytes)
