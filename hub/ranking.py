"""Hub-side ranking across devices: near-duplicate groups, novelty, fairness, class balance.

Each device ranks its own frames (``priority``: its uncertainty scores); the hub sees what all
of them send. Fifty cameras looking at the same confusing scene each send it as their best
sample, and a chatty camera sends ten times more than a quiet one. This module is the pure core
the annotation queue (:mod:`hub.storage.queue`) and the ingest (:mod:`hub.storage.groups`) use:

1. **signature** (:func:`signature_of`) — at ingest, the image is decoded small (Pillow's JPEG
   draft mode decodes at 1/8 scale) into a 64-bit perceptual hash (``imagehash.phash``: the
   DCT of a 32×32 grey thumbnail, robust to recompression, resizing, noise and brightness) and
   a 64-value *tiny image* (the 8×8 grey thumbnail, zero mean, unit norm: Torralba's "tiny
   images" scene descriptor, so brightness and contrast drop out). A payload Pillow cannot
   decode, or one over :data:`MAX_PIXELS`, has no signature and is grouped by its exact bytes.
2. **near-duplicate groups** — two images of a bundle whose hashes differ in at most
   :data:`DUP_BITS` bits *and* whose tiny images lie within :data:`DUP_FEATURE` are one group
   (:func:`is_duplicate`). Measured on crops of real photos (``tests/hub/scenes.py``):
   recompression, noise, ×0.5 resize and +20 % brightness stay within 4 bits and 0.29;
   distinct scenes are 22 bits or more apart. The second test is for sparse scenes: among
   6 × 300 of the demo's digit frames, 39 pairs of *different* frames hash within 6 bits, none
   passes both tests. Candidates are found through :func:`bands`: the hash cut
   in 8 bytes, indexed; two hashes within 7 bits share at least one byte (pigeonhole), so the
   lookup is exact for any threshold below 8.
3. **queue order** (:func:`rank`) — within a tier (needs review, corrected, unreviewed,
   confirmed), a greedy pass picks one entry at a time by, in order:

   a. *repeat last*: a candidate whose tiny image lies within :data:`REPEAT_BELOW` of an
      annotated sample or of an entry already picked above it is a repeat of a scene a human
      has seen or will see first; every non-repeat goes before it;
   b. *device round*: a device's (k+1)-th entry competes only after every device with
      candidates has had k (round robin), so a chatty device cannot push the others down;
   c. *value* = uncertainty × novelty × class balance: the device's ``priority`` (clipped to
      [0, 1]), novelty = min(1, distance / :data:`NOVEL_AT`) to the nearest annotated or
      already-picked image (1 without a signature or without references), and class balance
      ``sqrt((mean + 1) / (count + 1))`` clipped to [0.5, 2] over the per-class counts of the
      annotated samples plus the entries picked so far (the label a human gave on the device,
      else the model's most confident label);
   d. the database's order (higher priority, older, id).

   A sample the device kept at random (:func:`is_random`) is never a repeat and its value is
   its priority alone: a random baseline (the demo's ``rnd`` arm, the random slice) must stay
   random; it still counts as listed for the novelty of the others.

   Novelty and class counts are updated after each pick, so the second copy of a scene loses
   its place the moment the first one is listed.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DUP_BITS",
    "DUP_FEATURE",
    "MAX_PIXELS",
    "NOVEL_AT",
    "REPEAT_BELOW",
    "Candidate",
    "ImageSignature",
    "Ranked",
    "References",
    "bands",
    "decode_feature",
    "encode_feature",
    "hamming",
    "is_duplicate",
    "is_random",
    "label_of",
    "rank",
    "scale_boxes",
    "signature_of",
]

log = logging.getLogger("leanloop.hub.ranking")

DUP_BITS = 4
"""Hamming distance (of 64 bits) at or below which two images may be near duplicates (< 8)."""
DUP_FEATURE = 0.32
"""Tiny-image distance (0..2) at or below which a hash-close pair is a near duplicate."""
MAX_PIXELS = 40_000_000
"""Images larger than this get no signature (the decode would cost more than it tells)."""
NOVEL_AT = 0.8
"""Tiny-image distance (0..2) from which an image counts as fully novel (distinct real scenes
measured 0.86 or more apart; the same scene shifted by 10 % 0.15–0.8)."""
REPEAT_BELOW = 0.4
"""Tiny-image distance under which an image repeats an annotated or earlier-listed one."""
_TINY = 8


@dataclass(frozen=True)
class ImageSignature:
    """What the hub keeps of an image to group and rank it."""

    phash: int  # 64-bit perceptual hash
    width: int
    height: int
    feature: np.ndarray  # float32[64], zero mean, unit norm (all zeros for a flat image)


def signature_of(image: bytes) -> ImageSignature | None:
    """The image's signature, or None when Pillow cannot decode it (or it is too large)."""
    import imagehash
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as im:
            width, height = im.size
            if width < 1 or height < 1 or width * height > MAX_PIXELS:
                return None
            im.draft("L", (64, 64))  # JPEG: decode at 1/2..1/8 scale; others: no-op
            grey = im.convert("L")
            grey.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        log.debug("no signature: %s", e)
        return None
    phash = int(str(imagehash.phash(grey)), 16)
    tiny = np.asarray(grey.resize((_TINY, _TINY), Image.Resampling.BOX), np.float32).ravel()
    tiny = tiny - tiny.mean()
    norm = float(np.linalg.norm(tiny))
    feature = tiny / norm if norm > 1e-3 else np.zeros_like(tiny)
    return ImageSignature(phash, width, height, feature.astype(np.float32))


def hamming(a: int, b: int) -> int:
    """Bits that differ between two 64-bit hashes."""
    return (a ^ b).bit_count()


def is_duplicate(sig: ImageSignature, phash: int, feature: np.ndarray | None) -> bool:
    """Whether a stored image (its hash and tiny image) is a near duplicate of ``sig``."""
    if hamming(sig.phash, phash) > DUP_BITS or feature is None:
        return False
    return float(np.linalg.norm(sig.feature - feature)) <= DUP_FEATURE


def bands(phash: int) -> list[tuple[int, int]]:
    """``(band, byte)`` of the hash's 8 bytes: the index that finds near duplicates."""
    return [(i, (phash >> (8 * i)) & 0xFF) for i in range(8)]


def encode_feature(feature: np.ndarray) -> str:
    """The tiny image as text for a portable column (float16, base64)."""
    return base64.b64encode(feature.astype("<f2").tobytes()).decode("ascii")


def decode_feature(text: str | None) -> np.ndarray | None:
    if not text:
        return None
    try:
        return np.frombuffer(base64.b64decode(text), "<f2").astype(np.float32)
    except ValueError:
        return None


def scale_boxes(boxes: list[list[Any]], src: tuple[int, int], dst: tuple[int, int]) -> list[Any]:
    """Boxes ``[x1, y1, x2, y2, label]`` drawn on an image of size ``src`` (w, h), for the same
    scene at size ``dst`` (a near duplicate sent at another resolution)."""
    if src == dst or src[0] <= 0 or src[1] <= 0:
        return [list(b) for b in boxes]
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    out = []
    for b in boxes:
        x1, y1, x2, y2 = (float(v) for v in b[:4])
        out.append([round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2),
                    *b[4:]])  # fmt: skip
    return out


def label_of(meta: dict[str, Any], feedback: dict[str, Any] | None) -> str | None:
    """The class a sample stands for: a human's correction, else the model's most confident
    final-stage label (None when there is no prediction)."""
    if feedback and feedback.get("kind") == "correct" and feedback.get("label"):
        return str(feedback["label"])
    stages = (meta.get("prediction") or {}).get("stages") or {}
    if not isinstance(stages, dict) or not stages:
        return None
    last = list(stages.values())[-1]
    items = last.get("items") if isinstance(last, dict) else None
    best: tuple[float, str] | None = None
    for it in items or []:
        if isinstance(it, dict) and "label" in it:
            score = it.get("score", it.get("confidence"))
            s = float(score) if isinstance(score, int | float) else 0.0
            if best is None or s > best[0]:
                best = (s, str(it["label"]))
    return None if best is None else best[1]


@dataclass
class Candidate:
    """A pending group's representative, as the database ordered it (``order``)."""

    id: str
    bundle: str
    device: str
    tier: int  # 0 needs review, 1 corrected, 2 unreviewed, 3 confirmed
    priority: float
    order: int
    feature: np.ndarray | None = None
    label: str | None = None
    plain: bool = False  # kept at random: ranked by priority alone (see is_random)


def is_random(meta: dict[str, Any]) -> bool:
    """A sample the device kept at random (its random slice, or a ``random`` strategy alone):
    the hub orders it by its priority alone, so that a random baseline stays random."""
    scores = meta.get("scores") or {}
    return bool(meta.get("random_slice")) or (
        isinstance(scores, dict) and set(scores) == {"random"}
    )


@dataclass(frozen=True)
class Ranked:
    """A candidate's place in the queue and why."""

    candidate: Candidate
    novelty: float | None  # None: no signature to compare
    similar_to: str | None  # the nearest annotated / earlier-listed sample, when a repeat
    round: int  # 0: the device's first entry in this tier


@dataclass
class References:
    """What a bundle already has: annotated images' tiny images and per-class counts."""

    ids: list[str] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def rank(
    candidates: Sequence[Candidate], refs: dict[str, References], limit: int | None
) -> list[Ranked]:
    """The queue: ``candidates`` (database order) re-ordered as the module docstring says."""
    out: list[Ranked] = []
    by_tier: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_tier.setdefault(c.tier, []).append(c)
    # State shared across tiers: what is listed above also counts as "queued".
    seen_ids: dict[str, list[str]] = {b: list(r.ids) for b, r in refs.items()}
    seen_feats: dict[str, list[np.ndarray]] = {b: list(r.features) for b, r in refs.items()}
    counts: dict[str, dict[str, int]] = {b: dict(r.counts) for b, r in refs.items()}
    for tier in sorted(by_tier):
        if limit is not None and len(out) >= limit:
            break
        out.extend(
            _rank_tier(by_tier[tier], seen_ids, seen_feats, counts,
                       None if limit is None else limit - len(out))
        )  # fmt: skip
    return out


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and of ``b``."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(sq, 0.0))


def _rank_tier(
    cands: list[Candidate],
    seen_ids: dict[str, list[str]],
    seen_feats: dict[str, list[np.ndarray]],
    counts: dict[str, dict[str, int]],
    limit: int | None,
) -> list[Ranked]:
    n = len(cands)
    dist = np.full(n, np.inf, np.float32)  # to the nearest annotated / picked image
    near: list[str | None] = [None] * n
    has_feat = np.array([c.feature is not None for c in cands], bool)
    for b in {c.bundle for c in cands}:
        known = seen_feats.get(b)
        mine = [i for i, c in enumerate(cands) if c.bundle == b and c.feature is not None]
        if not known or not mine:
            continue
        ref = np.stack(known)
        for start in range(0, len(mine), 512):  # bounded memory: 512 × refs distances at once
            rows = mine[start : start + 512]
            d = _distances(np.stack([cands[i].feature for i in rows]), ref)  # type: ignore[misc]
            best = np.argmin(d, axis=1)
            for k, i in enumerate(rows):
                dist[i], near[i] = float(d[k, best[k]]), seen_ids[b][int(best[k])]
    prio = np.array([min(1.0, max(0.0, c.priority)) for c in cands], np.float64) + 0.01
    order = np.array([c.order for c in cands], np.int64)
    bundles = {b: k for k, b in enumerate(sorted({c.bundle for c in cands}))}
    bundle_of = np.array([bundles[c.bundle] for c in cands], np.int64)
    devices = {d: k for k, d in enumerate(sorted({(c.bundle, c.device) for c in cands}))}
    dev_of = np.array([devices[(c.bundle, c.device)] for c in cands], np.int64)
    picks = np.zeros(len(devices), np.int64)
    # Class counts as arrays: one slot per (bundle, class), the bundle's classes averaged.
    classes = sorted({(b, lbl) for b in bundles for lbl in counts.get(b, {})}
                     | {(c.bundle, c.label) for c in cands if c.label is not None})  # fmt: skip
    slot = {k: s for s, k in enumerate(classes)}
    count = np.array([counts.get(b, {}).get(lbl, 0) for b, lbl in classes], np.float64)
    class_bundle = np.array([bundles[b] for b, _ in classes], np.int64)
    per_bundle = np.maximum(np.bincount(class_bundle, minlength=len(bundles)), 1.0)
    lab_of = np.array([-1 if c.label is None else slot[(c.bundle, c.label)] for c in cands])
    plain = np.array([c.plain for c in cands], bool)
    labelled = np.flatnonzero((lab_of >= 0) & ~plain)
    labelled_bundle, labelled_slot = bundle_of[labelled], lab_of[labelled]
    dim = _TINY * _TINY
    feats = np.stack([c.feature if c.feature is not None else np.zeros(dim, np.float32)
                      for c in cands]) if n else np.zeros((0, dim), np.float32)  # fmt: skip
    sq = (feats * feats).sum(1)
    # Novelty and repeat change only where a pick comes closer: kept, not recomputed.
    novelty = np.where(has_feat & np.isfinite(dist), np.minimum(1.0, dist / NOVEL_AT), 1.0)
    repeat = has_feat & (dist < REPEAT_BELOW) & ~plain
    left = np.ones(n, bool)
    out: list[Ranked] = []
    while left.any() and (limit is None or len(out) < limit):
        balance = np.ones(n)
        if labelled.size:
            mean = np.bincount(class_bundle, weights=count, minlength=len(bundles)) / per_bundle
            ratio = (mean[labelled_bundle] + 1.0) / (count[labelled_slot] + 1.0)
            balance[labelled] = np.clip(np.sqrt(ratio), 0.5, 2.0)
        value = prio * np.where(plain, 1.0, novelty) * balance
        # The best by (not a repeat, fewest picks of its device, highest value, lowest order),
        # narrowed key by key: a few vector operations instead of a sort per pick.
        pool = left & ~repeat
        if not pool.any():
            pool = left.copy()
        device_picks = picks[dev_of]
        pool &= device_picks == device_picks[pool].min()
        best = np.where(pool, value, -np.inf)
        ties = np.flatnonzero(pool & (best == best.max()))
        i = int(ties[np.argmin(order[ties])])
        c = cands[i]
        out.append(
            Ranked(
                c,
                float(novelty[i]) if has_feat[i] else None,
                near[i] if repeat[i] else None,
                int(picks[dev_of[i]]),
            )
        )
        left[i] = False
        picks[dev_of[i]] += 1
        if lab_of[i] >= 0:
            count[lab_of[i]] += 1
            counts.setdefault(c.bundle, {})[str(c.label)] = int(count[lab_of[i]])
        if c.feature is not None:
            seen_ids.setdefault(c.bundle, []).append(c.id)
            seen_feats.setdefault(c.bundle, []).append(c.feature)
            same = np.flatnonzero(left & has_feat & (bundle_of == bundle_of[i]))
            if same.size:
                d2 = sq[same] + sq[i] - 2.0 * (feats[same] @ feats[i])
                d = np.sqrt(np.maximum(d2, 0.0))
                nearer = d < dist[same]
                closer = same[nearer]
                if closer.size:
                    for t in closer:
                        near[int(t)] = c.id
                    dist[closer] = d[nearer]
                    novelty[closer] = np.minimum(1.0, dist[closer] / NOVEL_AT)
                    repeat[closer] = (dist[closer] < REPEAT_BELOW) & ~plain[closer]
    return out
