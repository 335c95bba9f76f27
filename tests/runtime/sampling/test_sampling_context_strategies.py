"""The strategies that read options or context rank constructed frames in the promised order."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.config import load_config
from runtime.errors import ConfigError
from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.sampling import REGISTRY, SampleContext, StrategyOptions, make_scorer
from runtime.sampling.novelty import dhash, hamming
from runtime.sampling.rare_class import rarity


def strategy(name: str, reducer: str = "max", **params: Any) -> Any:
    return REGISTRY[name](StrategyOptions(reducer=reducer, params=params))  # type: ignore[arg-type]


def frame(
    labels: list[str] | None = None,
    scores: list[float] | None = None,
    *,
    det_scores: list[float] | None = None,
    shadow: dict[str, Any] | None = None,
    error: str | None = None,
) -> Prediction:
    labels = labels or []
    scores = scores or [0.9] * len(labels)
    stages: dict[str, StageResult] = {}
    if det_scores is not None:
        box = (0.0, 0.0, 4.0, 4.0)
        dets = [Item(0, "digit", s, box=box) for s in det_scores]
        stages["det"] = StageResult("det", "detection", dets, 1.0)
    items = [Item(0, lbl, s) for lbl, s in zip(labels, scores, strict=True)]
    stages["cls"] = StageResult("cls", "classification", items, 1.0)
    return Prediction(frame_id="f", stages=stages, shadow=shadow, error=error)


def ranked(
    s: Any, frames: dict[str, Prediction], ctx: dict[str, SampleContext] | None = None
) -> list[str]:
    values = {k: s.score(p, (ctx or {}).get(k)) for k, p in frames.items()}
    return sorted(values, key=lambda k: values[k], reverse=True)


def at_utc(hour: int, minute: int = 0) -> SampleContext:
    return SampleContext(timestamp=float(calendar.timegm((2026, 3, 1, hour, minute, 0))))


# ---- close to threshold ---------------------------------------------------------------------


def test_close_to_threshold_ranks_detections_when_scores_approach_threshold() -> None:
    s = strategy("close_to_threshold", threshold=0.25, width=0.2, stage="det")
    frames = {
        "at": frame(["1"], det_scores=[0.95, 0.26]),
        "near": frame(["1"], det_scores=[0.35]),
        "far": frame(["1"], det_scores=[0.9, 0.99]),
        "none": frame(["1"], det_scores=[]),
    }
    assert ranked(s, frames) == ["at", "near", "far", "none"]
    assert s.score(frames["at"]) == pytest.approx(0.95)
    assert s.score(frames["far"]) == 0.0 == s.score(frames["none"])


@pytest.mark.parametrize(("reducer", "expected"), [("max", 1.0), ("min", 0.0), ("mean", 0.5)])
def test_close_to_threshold_combines_items_when_reducer_is(reducer: str, expected: float) -> None:
    s = strategy("close_to_threshold", reducer, threshold=0.5, width=0.1)
    assert s.score(frame(["a", "b"], [0.5, 0.95])) == pytest.approx(expected)


# ---- disagreement ---------------------------------------------------------------------------


def test_disagreement_ranks_frames_when_shadow_compared_them() -> None:
    s = strategy("disagreement")
    frames = {
        "split": frame(["1"], shadow={"disagreement": 0.9, "candidate_version": 4}),
        "close": frame(["1"], shadow={"disagreement": 0.2}),
        "unseen": frame(["1"]),
        "odd": frame(["1"], shadow={"disagreement": "lots"}),
    }
    assert ranked(s, frames)[:2] == ["split", "close"]
    assert s.score(frames["split"]) == pytest.approx(0.9)
    assert s.score(frames["unseen"]) == 0.0 == s.score(frames["odd"])
    assert s.score(frame(["1"], shadow={"disagreement": 7.0})) == 1.0
    assert s.score(frame(["1"], shadow={"disagreement": 0.9}, error="bad")) == 0.0


# ---- rules ----------------------------------------------------------------------------------


def test_rules_rank_frames_when_operator_rules_hit() -> None:
    s = strategy(
        "rules",
        timezone="UTC",
        when=[
            {"labels": ["7"], "score": 1.0},
            {"more_than": 2, "score": 0.6},
            {"between": "22:00-06:00", "score": 0.3},
        ],
    )
    frames = {
        "seven": frame(["1", "7"]),
        "crowd": frame(["1", "2", "3"]),
        "night": frame(["1"]),
        "day": frame(["1"]),
        "two": frame(["1", "2"]),
    }
    ctx = {k: at_utc(12) for k in frames} | {"night": at_utc(23, 30)}
    assert ranked(s, frames, ctx)[:3] == ["seven", "crowd", "night"]
    assert [s.score(frames[k], ctx[k]) for k in ("seven", "crowd", "night", "day", "two")] == [
        1.0,
        0.6,
        0.3,
        0.0,
        0.0,
    ]


@pytest.mark.parametrize(
    ("rule", "labels", "when", "hit"),
    [
        ({"labels": ["7"], "more_than": 1}, ["7", "1", "1"], None, False),  # one 7 only
        ({"labels": ["7"], "more_than": 1}, ["7", "7"], None, True),
        ({"labels": ["7"], "between": "08:00-09:00"}, ["7"], at_utc(8, 59), True),
        ({"labels": ["7"], "between": "08:00-09:00"}, ["7"], at_utc(9, 0), False),
        ({"between": "22:00-06:00"}, [], at_utc(5, 59), True),
        ({"between": "22:00-06:00"}, [], at_utc(6, 0), False),
        ({"between": "22:00-06:00"}, [], None, False),  # no frame time: never the wall clock
        ({"between": "10:00-10:00"}, [], at_utc(3), True),  # equal ends: all day
        ({"more_than": 0}, [], None, False),
    ],
)
def test_rules_match_all_conditions_when_rule_combines_them(
    rule: dict[str, Any], labels: list[str], when: SampleContext | None, hit: bool
) -> None:
    s = strategy("rules", timezone="UTC", when=[rule])
    assert s.score(frame(labels), when) == (1.0 if hit else 0.0)


def test_rules_read_local_time_when_timezone_is_named() -> None:
    s = strategy("rules", timezone="Asia/Tokyo", when=[{"between": "08:00-09:00"}])
    assert s.score(frame(["1"]), at_utc(23, 30)) == 1.0  # 08:30 in Tokyo
    assert s.score(frame(["1"]), at_utc(8, 30)) == 0.0


# ---- novelty --------------------------------------------------------------------------------


def scene(seed: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def test_dhash_stays_close_when_frame_is_noisy_or_rescaled() -> None:
    base = scene(1)
    noisy = np.clip(
        base.astype(np.int16) + np.random.default_rng(2).integers(-6, 7, base.shape), 0, 255
    )
    assert hamming(dhash(base), dhash(noisy.astype(np.uint8))) <= 4
    assert hamming(dhash(base), dhash(scene(1, (240, 320)))) <= 4
    assert hamming(dhash(base), dhash(scene(3))) > 16
    assert dhash(base[:, :, 0]) == dhash(np.ascontiguousarray(base[:, :, 0]))  # grey input
    assert 0 <= dhash(base) < 1 << 64


def test_novelty_ranks_near_duplicates_last_when_a_similar_frame_was_kept() -> None:
    s = make_scorer({"novelty": 1.0})
    assert s.needs_image_hash
    p = frame(["1"])
    kept = SampleContext(image_hash=dhash(scene(1)))
    assert s.score(p, kept)[1] == 1.0  # nothing kept yet
    s.kept(p, kept)
    noisy = np.clip(scene(1).astype(np.int16) + 5, 0, 255).astype(np.uint8)
    ctx = {
        "new": SampleContext(image_hash=dhash(scene(7))),
        "dup": SampleContext(image_hash=dhash(noisy)),
        "same": kept,
        "unknown": SampleContext(),
    }
    frames = dict.fromkeys(ctx, p)
    nov = REGISTRY["novelty"](StrategyOptions())
    nov.kept(p, kept)
    assert ranked(nov, frames, ctx) == ["new", "unknown", "dup", "same"]
    assert nov.score(p, ctx["dup"]) == 0.0
    assert nov.score(p, ctx["unknown"]) == 0.5


def test_novelty_forgets_oldest_hash_when_memory_is_full() -> None:
    nov = strategy("novelty", memory=2, radius=0, distinct=1)
    p = frame(["1"])
    hashes = [0, (1 << 64) - 1, 0x00000000FFFFFFFF]
    for h in hashes:
        nov.kept(p, SampleContext(image_hash=h))
    assert nov.score(p, SampleContext(image_hash=hashes[0])) == 1.0  # forgotten
    assert nov.score(p, SampleContext(image_hash=hashes[2])) == 0.0


# ---- rare class -----------------------------------------------------------------------------


def test_rare_class_ranks_unseen_class_first_when_one_class_dominates() -> None:
    s = strategy("rare_class")
    assert s.score(frame(["1"])) == 0.0  # the very first frame: nothing is rare yet
    for _ in range(49):
        s.score(frame(["1"]))
    for _ in range(5):
        s.score(frame(["2"]))
    probe = strategy("rare_class")
    probe.counts = dict(s.counts)
    frames = {"common": frame(["1"]), "rare": frame(["2"]), "new": frame(["7"]), "empty": frame()}
    assert ranked(probe, frames) == ["new", "rare", "common", "empty"]
    assert s.score(frames["new"]) == pytest.approx(rarity(0, 50)) == pytest.approx(1 - 1 / 51)
    assert s.score(frames["rare"]) == pytest.approx(1 - 6 / 51)
    s.counts.pop("7")
    assert s.counts == {"1": 50, "2": 6}


def test_rare_class_uses_context_counts_when_caller_passes_them() -> None:
    s = strategy("rare_class")
    ctx = SampleContext(class_counts={"cat": 1000, "dog": 10})
    assert s.score(frame(["dog"]), ctx) > s.score(frame(["cat"]), ctx)
    assert s.counts == {}  # external counts are not updated


def test_rare_class_stays_bounded_when_counts_and_labels_grow() -> None:
    s = strategy("rare_class", window=100, max_classes=3)
    for i in range(1000):
        s.score(frame([str(i % 5)]))
    assert len(s.counts) == 3
    assert max(s.counts.values()) <= 100


# ---- scorer, options and config -------------------------------------------------------------


def test_scorer_passes_context_when_rules_need_the_time() -> None:
    s = make_scorer(
        {"rules": 1.0, "margin": 1.0},
        options={"rules": {"timezone": "UTC", "when": [{"between": "00:00-01:00"}]}},
    )
    assert not s.needs_image_hash
    p = Prediction(
        frame_id="f",
        stages={
            "c": StageResult("c", "classification", [Item(0, "1", 1.0, scores=[1.0, 0.0])], 1.0)
        },
    )
    assert s.score(p, at_utc(0, 30)) == ({"rules": 1.0, "margin": 0.0}, 0.5)
    assert s.score(p, at_utc(2)) == ({"rules": 0.0, "margin": 0.0}, 0.0)


@pytest.mark.parametrize(
    ("weights", "options", "needle"),
    [
        ({"novelty": 1.0}, {"novelty": {"radis": 3}}, "sampling.novelty.radis"),
        ({"novelty": 1.0}, {"novelty": {"radius": 20, "distinct": 10}}, "greater than radius"),
        ({"margin": 1.0}, {"margin": {"x": 1}}, "takes no options"),
        ({"margin": 1.0}, {"rules": {"when": [{}]}}, "at least one of"),  # unused, still checked
        ({"margin": 1.0}, {"nope": {}}, "unknown strategy 'nope'"),
        ({"rules": 1.0}, {"rules": {"timezone": "Mars/Olympus"}}, "unknown time zone"),
        ({"close_to_threshold": 1.0}, {"close_to_threshold": {"width": 0}}, "width"),
    ],
)
def test_make_scorer_raises_config_error_when_options_are_bad(
    weights: dict[str, float], options: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        make_scorer(weights, options=options)


def test_device_config_rejects_unknown_sampling_key_when_loaded(tmp_path: Path) -> None:
    cfg = tmp_path / "device.yaml"
    cfg.write_text("sampling:\n  weights: {novelty: 1.0}\n  novelty: {radius: 3, memroy: 9}\n")
    with pytest.raises(ConfigError, match=r"sampling\.novelty\.memroy"):
        load_config(cfg)
    cfg.write_text(
        "sampling:\n  weights: {rules: 1.0, margin: 0.5}\n"
        "  rules: {timezone: UTC, when: [{labels: ['7'], score: 0.8}]}\n"
    )
    loaded = load_config(cfg).sampling
    scorer = make_scorer(loaded.weights, options=loaded.strategy_options())
    assert scorer.score(frame(["7"]))[0]["rules"] == 0.8
