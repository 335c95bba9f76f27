"""The ranking core (hub/ranking.py) on real photos and on made-up candidates, and the
near-duplicate groups in storage on each backend."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scenes import copy_of, jpeg, look_alike, scene

from hub.ranking import (
    DUP_BITS,
    Candidate,
    References,
    bands,
    hamming,
    rank,
    scale_boxes,
    signature_of,
)
from hub.storage import HubDB, open_database


def sig(data: bytes) -> Any:
    s = signature_of(data)
    assert s is not None
    return s


def test_signature_when_another_camera_sends_a_copy_is_within_dup_bits() -> None:
    for k in (0, 5, 9, 14):
        base = sig(jpeg(scene(k)))
        for how in ("q50", "bright", "noise", "half"):
            assert hamming(base.phash, sig(copy_of(scene(k), how)).phash) <= DUP_BITS, (k, how)
    hashes = [sig(jpeg(scene(k))).phash for k in range(15)]
    apart = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(apart) > 3 * DUP_BITS  # distinct scenes are far apart
    moved = sig(look_alike(scene(3)))
    assert hamming(moved.phash, hashes[3]) > DUP_BITS  # the view moved: not a duplicate ...
    assert float(np.linalg.norm(moved.feature - sig(jpeg(scene(3))).feature)) < 0.4  # ... alike


def test_signature_when_image_does_not_decode_is_none() -> None:
    assert signature_of(b"\xff\xd8jpeg\xff\xd9") is None
    assert signature_of(b"") is None
    buf = io.BytesIO()
    Image.new("L", (40, 30), 128).save(buf, "PNG")
    flat = sig(buf.getvalue())  # a flat image: a hash, a zero feature, its size
    assert (flat.width, flat.height) == (40, 30) and not flat.feature.any()


def test_bands_when_hashes_differ_in_fewer_than_8_bits_share_one() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = int(rng.integers(0, 2**63)) << 1
        flips = rng.choice(64, size=7, replace=False)
        b = a
        for bit in flips:
            b ^= 1 << int(bit)
        assert set(bands(a)) & set(bands(b))


def test_scale_boxes_when_copy_is_half_size_halves_them() -> None:
    assert scale_boxes([[10, 20, 30, 40, "a"]], (100, 80), (50, 40)) == [[5, 10, 15, 20, "a"]]


def _feat(k: int, jitter: float = 0.0) -> np.ndarray:
    v = np.zeros(64, np.float32)
    v[k] = 1.0
    v[(k + 1) % 64] = jitter
    return v / np.linalg.norm(v)


def _unit(v: np.ndarray) -> np.ndarray:
    out: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
    return out


def cand(i: int, device: str, priority: float, **kw: Any) -> Candidate:
    return Candidate(id=f"s{i}", bundle="b", device=device, tier=2, priority=priority, order=i,
                     **kw)  # fmt: skip


def test_rank_when_one_device_is_chatty_gives_others_their_turn() -> None:
    cands = [cand(i, "chatty", 0.99 - i / 100, feature=_feat(i)) for i in range(5)]
    cands.append(cand(9, "quiet", 0.2, feature=_feat(20)))
    order = [r.candidate.id for r in rank(cands, {}, None)]
    assert order[:2] == ["s0", "s9"] and len(order) == 6


def test_rank_when_many_devices_send_one_scene_lists_novel_ones_before_repeats() -> None:
    same = [cand(i, f"cam-{i}", 0.9, feature=_feat(3, jitter=0.1 * i)) for i in range(5)]
    novel = [cand(10 + i, f"cam-{i}", 0.3, feature=_feat(30 + i)) for i in range(2)]
    ranked = rank(same + novel, {}, None)
    # cam-0 had its turn (s0), so cam-1's novel scene goes before cam-0's
    assert [r.candidate.id for r in ranked[:3]] == ["s0", "s11", "s10"]
    assert all(r.similar_to is not None for r in ranked[3:])
    assert [r.novelty for r in ranked[:3]] == [1.0, 1.0, 1.0]
    assert len(rank(same + novel, {}, 2)) == 2


def test_rank_when_a_scene_is_annotated_its_look_alike_is_a_repeat() -> None:
    refs = {"b": References(ids=["done"], features=[_feat(7)])}
    ranked = rank([cand(0, "a", 0.9, feature=_feat(7, 0.05)), cand(1, "a", 0.1)], refs, None)
    assert [(r.candidate.id, r.similar_to) for r in ranked] == [("s1", None), ("s0", "done")]
    assert ranked[0].novelty is None  # no signature: nothing to compare


def test_rank_when_a_class_is_well_annotated_prefers_the_rare_one() -> None:
    refs = {"b": References(counts={"cat": 20, "dog": 0})}
    ranked = rank([cand(0, "a", 0.5, label="cat"), cand(1, "b", 0.5, label="dog")], refs, None)
    assert [r.candidate.id for r in ranked] == ["s1", "s0"]


def test_groups_when_copies_arrive_share_one_group_and_annotation(
    hub_backend: dict[str, Any], tmp_path: Path
) -> None:
    db = HubDB(open_database(hub_backend.get("database_url"), tmp_path))
    im = scene(5)
    images = {"s1": jpeg(im), "s2": copy_of(im, "half"), "s3": jpeg(scene(8))}
    for i, (sid, data) in enumerate(images.items()):
        db.add_sample(sid, "b", f"cam-{i}", 0.5, {"id": sid}, f"{i:064x}")
        db.add_signature(sid, "b", sig(data))
    assert db.group_of("s2") == ("s1", ["s1", "s2"]) and db.group_of("s3") == ("s3", ["s3"])
    queue = db.annotation_queue("b", None)
    assert sorted((e.sample.id, e.copies) for e in queue) == [("s1", 2), ("s3", 1)]
    assert db.annotate("s1", {"boxes": [[10, 10, 20, 20, "x"]], "annotator": "a"}) == ["s2"]
    s2 = db.sample("s2")
    assert s2.state == "annotated" and s2.annotation is not None
    box = s2.annotation["boxes"][0]  # scaled to the half-size copy (odd sizes round down)
    assert box[:4] == pytest.approx([5, 5, 10, 10], abs=0.1) and box[4] == "x"
    assert s2.annotation["inherited_from"] == "s1"
    db.add_sample("s4", "b", "cam-9", 0.9, {"id": "s4"}, "f" * 64)  # arrives later
    join = db.add_signature("s4", "b", sig(copy_of(im, "noise")))
    assert (join.group_id, join.inherited_from) == ("s1", "s1")
    assert db.add_signature("s4", "b", sig(copy_of(im, "noise"))).group_id == "s1"  # again
    assert [e.sample.id for e in db.annotation_queue("b", None)] == ["s3"]
    db.close()


def test_is_duplicate_when_sparse_frames_hash_alike_tells_them_apart() -> None:
    """Digit frames (dark, sparse) sometimes hash within DUP_BITS of a different frame; the
    tiny-image test keeps them apart, while a recompressed copy still groups."""
    import cv2

    from hub.ranking import is_duplicate
    from trainer.data import LAB_STYLE, compose_frame, load_mnist

    images, labels = load_mnist()
    rng = np.random.default_rng(0)
    frames = [compose_frame(rng, images[:2000], labels[:2000], LAB_STYLE) for _ in range(300)]
    sigs = [sig(cv2.imencode(".png", f.image)[1].tobytes()) for f in frames]
    close = [
        (a, b)
        for i, a in enumerate(sigs)
        for b in sigs[i + 1 :]
        if hamming(a.phash, b.phash) <= DUP_BITS
    ]
    assert close  # the hash alone would group different frames ...
    assert not [p for p in close if is_duplicate(p[0], p[1].phash, p[1].feature)]  # ... not both
    copy = sig(cv2.imencode(".jpg", frames[0].image, [cv2.IMWRITE_JPEG_QUALITY, 60])[1].tobytes())
    assert is_duplicate(sigs[0], copy.phash, copy.feature)


def test_rank_when_samples_were_kept_at_random_orders_them_by_priority_alone() -> None:
    refs = {"b": References(ids=["done"], features=[_feat(7)], counts={"cat": 20, "dog": 0})}
    cands = [
        cand(0, "a", 0.9, feature=_feat(7, 0.05), label="cat", plain=True),
        cand(1, "b", 0.5, feature=_feat(30), label="dog", plain=True),
    ]
    ranked = rank(cands, refs, None)
    assert [(r.candidate.id, r.similar_to) for r in ranked] == [("s0", None), ("s1", None)]


def _rule_key(
    c: Candidate,
    left: list[Candidate],
    seen: dict[str, list[tuple[str, np.ndarray]]],
    counts: dict[str, dict[str, int]],
    picks: dict[tuple[str, str], int],
) -> tuple[int, int, float, int]:
    """(repeat, device round, -value, order) of one candidate, straight from the rules."""
    from hub.ranking import NOVEL_AT, REPEAT_BELOW

    dist = None
    if c.feature is not None and seen.get(c.bundle):
        dist = min(float(np.linalg.norm(c.feature - f)) for _, f in seen[c.bundle])
    repeat = dist is not None and dist < REPEAT_BELOW and not c.plain
    novelty = 1.0 if dist is None or c.plain else min(1.0, dist / NOVEL_AT)
    balance = 1.0
    have = counts.get(c.bundle, {})
    labels = set(have) | {x.label for x in left if x.bundle == c.bundle and x.label}
    if c.label is not None and not c.plain:
        mean = sum(have.values()) / max(1, len(labels))
        balance = min(2.0, max(0.5, ((mean + 1.0) / (have.get(c.label, 0) + 1.0)) ** 0.5))
    value = (min(1.0, max(0.0, c.priority)) + 0.01) * novelty * balance
    return (int(repeat), picks.get((c.bundle, c.device), 0), -value, c.order)


def _rank_by_the_rules(cands: list[Candidate], refs: dict[str, References]) -> list[str]:
    """The queue order as the docstring of hub.ranking states it, one full sort per pick."""
    seen = {b: list(zip(r.ids, r.features, strict=True)) for b, r in refs.items()}
    counts = {b: dict(r.counts) for b, r in refs.items()}
    out: list[str] = []
    for tier in sorted({c.tier for c in cands}):
        left = [c for c in cands if c.tier == tier]
        picks: dict[tuple[str, str], int] = {}
        while left:
            keys = [_rule_key(c, left, seen, counts, picks) for c in left]
            best = left[keys.index(min(keys))]
            left.remove(best)
            out.append(best.id)
            picks[(best.bundle, best.device)] = picks.get((best.bundle, best.device), 0) + 1
            if best.label is not None:
                counts.setdefault(best.bundle, {})
                counts[best.bundle][best.label] = counts[best.bundle].get(best.label, 0) + 1
            if best.feature is not None:
                seen.setdefault(best.bundle, []).append((best.id, best.feature))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_rank_when_candidates_are_random_follows_the_rules_one_by_one(seed: int) -> None:
    """The vectorised greedy pass picks what the rules pick, on made-up fleets with repeats,
    chatty devices, several bundles and tiers, random-slice samples and missing signatures."""
    rng = np.random.default_rng(seed)
    base = [_feat(int(k), float(j)) for k, j in zip(rng.integers(0, 64, 12),
                                                    rng.random(12), strict=True)]  # fmt: skip
    cands = []
    for i in range(60):
        f = base[int(rng.integers(12))] + rng.normal(0, rng.choice([0.01, 0.04, 0.08]), 64)
        cands.append(Candidate(
            id=f"s{i}", bundle=f"b{int(rng.integers(2))}", device=f"d{int(rng.integers(5))}",
            tier=int(rng.choice([1, 2, 2, 2])), priority=float(rng.choice([0.2, 0.5, 0.9, 1.3])),
            order=i, feature=None if rng.random() < 0.15 else _unit(f),
            label=None if rng.random() < 0.2 else f"c{int(rng.integers(3))}",
            plain=bool(rng.random() < 0.1),
        ))  # fmt: skip
    refs = {"b0": References(ids=["r0", "r1"], features=[base[0], base[1]],
                             counts={"c0": 4, "c1": 1})}  # fmt: skip
    want = _rank_by_the_rules(cands, refs)
    assert [r.candidate.id for r in rank(cands, refs, None)] == want
    assert [r.candidate.id for r in rank(cands, refs, 7)] == want[:7]


def test_rank_when_every_candidate_is_a_repeat_lists_them_all() -> None:
    refs = {"b": References(ids=["done"], features=[_feat(7)])}
    cands = [cand(i, f"d{i % 2}", 0.5, feature=_feat(7, 0.01 * i)) for i in range(5)]
    ranked = rank(cands, refs, None)
    assert sorted(r.candidate.id for r in ranked) == [f"s{i}" for i in range(5)]
    assert all(r.similar_to is not None for r in ranked)
