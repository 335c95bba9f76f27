"""The gate's pure core: spec parsing, metrics, paired bootstrap, slices (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.replay.frames import Guess, HistoryFrame, Outcome, PredItem, TruthObject
from hub.replay.gate import judge, slice_members
from hub.replay.metrics import build_counts
from hub.replay.spec import GateSpec, load_gate_spec, parse_gate_spec, spec_digest
from runtime.errors import ConfigError

CLASSES = ["apple", "banana", "cherry"]


def frame(n: int, truth: str, cohort: str, hour: int = 10) -> HistoryFrame:
    return HistoryFrame(
        id=f"f{n:05d}",
        truth=(TruthObject(truth),),
        time=1_700_000_000 - (1_700_000_000 % 86400) + hour * 3600 + n,
        device=f"{cohort}-cam",
        cohort=cohort,
        selection="random" if n % 2 else "strategy",
    )


def said(label: str, score: float = 0.9) -> Outcome:
    return Outcome(items=(PredItem(label, score, top_k=(Guess(label, score),)),))


def wrong(truth: str) -> str:
    return CLASSES[(CLASSES.index(truth) + 1) % 3]


def history(
    rates: dict[str, tuple[int, float, float]],
) -> tuple[list[HistoryFrame], list[Outcome], list[Outcome]]:
    """cohort -> (frames, baseline accuracy, candidate accuracy); errors spread evenly."""
    frames, base, cand = [], [], []
    n = 0
    for cohort, (count, b_acc, c_acc) in rates.items():
        for k in range(count):
            truth = CLASSES[k % 3]
            frames.append(frame(n, truth, cohort))
            base.append(said(truth if (k * 7919 % count) < b_acc * count else wrong(truth)))
            cand.append(said(truth if (k * 7907 % count) < c_acc * count else wrong(truth)))
            n += 1
    return frames, base, cand


SPEC = GateSpec.model_validate(
    {
        "metrics": {"top1_accuracy": {"max_drop": 0.02}},
        "slices": {"by": ["cohort"], "min_size": 30},
        "bootstrap": {"resamples": 300, "seed": 7},
    }
)


def test_gate_blocks_when_better_overall_but_worse_on_one_cohort() -> None:
    frames, base, cand = history({"north": (200, 0.70, 1.0), "south": (100, 0.95, 0.60)})
    overall = build_counts(frames, cand, CLASSES).value("top1_accuracy")
    assert overall > build_counts(frames, base, CLASSES).value("top1_accuracy")
    decision = judge(frames, base, cand, CLASSES, SPEC)
    assert not decision.passed
    assert [f"{j.slice} {j.metric}" for j in decision.blocked_by] == ["cohort=south top1_accuracy"]
    assert "cohort=south" in decision.summary()


def test_gate_passes_an_identical_candidate() -> None:
    frames, base, _ = history({"north": (100, 0.8, 0.8), "south": (60, 0.9, 0.9)})
    decision = judge(frames, base, list(base), CLASSES, SPEC)
    assert decision.passed
    assert {j.status for j in decision.judgements} == {"pass"}
    assert all(j.delta == 0 and j.ci_low == 0 and j.ci_high == 0 for j in decision.judgements)


def test_gate_passes_a_drop_that_is_not_significant() -> None:
    # One more error in 100 frames: a drop, but well inside the bootstrap noise.
    frames, base, cand = history({"north": (100, 0.80, 0.79)})
    spec = SPEC.model_copy(
        update={"metrics": {"top1_accuracy": parse_gate_spec({}).metrics["top1_accuracy"]}}
    )
    decision = judge(frames, base, cand, CLASSES, spec)
    j = decision.judgements[0]
    assert j.delta is not None and j.delta < 0 and j.ci_high is not None and j.ci_high > 0
    assert decision.passed


def test_gate_says_insufficient_data_for_a_small_slice_never_pass() -> None:
    frames, base, cand = history({"north": (100, 0.8, 0.9), "tiny": (5, 1.0, 0.0)})
    decision = judge(frames, base, cand, CLASSES, SPEC)
    tiny = [j for j in decision.judgements if j.slice == "cohort=tiny"]
    assert [j.status for j in tiny] == ["insufficient_data"]
    assert decision.passed  # not blocking unless the spec says so
    strict = SPEC.model_copy(update={"insufficient_blocks": True})
    assert not judge(frames, base, cand, CLASSES, strict).passed


def test_gate_floor_and_direction_of_false_alarm_rate() -> None:
    frames, base, cand = history({"north": (120, 0.9, 0.9)})
    # candidate alerts on every frame: the false-alarm rate (lower is better) rises to 1
    loud = [Outcome(items=(*o.items, PredItem("banana", 0.99))) for o in cand]
    spec = parse_gate_spec(
        {
            "metrics": {"false_alarm_rate": {"max_drop": 0.05}, "recall:apple": {"floor": 0.95}},
            "slices": {"by": [], "min_size": 10},
            "bootstrap": {"resamples": 200},
            "events": {"classes": ["banana"], "alert_threshold": 0.5},
        }
    )
    d = judge(frames, base, loud, CLASSES, spec)
    status = {j.metric: j.status for j in d.judgements}
    assert status == {"false_alarm_rate": "regression", "recall:apple": "below_floor"}


def test_gate_decision_repeats_for_a_seed() -> None:
    frames, base, cand = history({"north": (150, 0.8, 0.75), "south": (80, 0.7, 0.8)})
    a = judge(frames, base, cand, CLASSES, SPEC).to_dict()
    b = judge(frames, base, cand, CLASSES, SPEC).to_dict()
    assert a == b
    other = SPEC.model_copy(update={"bootstrap": SPEC.bootstrap.model_copy(update={"seed": 8})})
    c = judge(frames, base, cand, CLASSES, other).to_dict()
    assert [j["ci_low"] for j in a["judgements"]] != [j["ci_low"] for j in c["judgements"]]


def test_slices_cut_by_every_dimension() -> None:
    frames = [frame(0, "apple", "n", hour=1), frame(1, "cherry", "s", hour=13)]
    spec = parse_gate_spec({"slices": {"by": ["cohort", "class", "time_of_day", "selection"]}})
    names = set(slice_members(frames, spec))
    assert names == {
        "all", "cohort=n", "cohort=s", "class=apple", "class=cherry",
        "time_of_day=00-06", "time_of_day=12-18", "selection=random", "selection=strategy",
    }  # fmt: skip


def test_map50_matches_a_hand_computation() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    frames = [
        HistoryFrame(id="a", truth=(TruthObject("apple", box),)),
        HistoryFrame(id="b", truth=(TruthObject("apple", box),)),
    ]
    # frame a: a false positive (0.9) elsewhere, then the hit (0.8); frame b: missed.
    outs = [
        Outcome(items=(PredItem("apple", 0.9, (50, 50, 60, 60)), PredItem("apple", 0.8, box))),
        Outcome(),
    ]
    t = build_counts(frames, outs, ["apple"])
    # ranked: FP (p=0, r=0), TP (p=1/2, r=1/2) -> AP = 0.5 * 0.5
    assert t.value("map50") == pytest.approx(0.25)
    assert t.value("top1_accuracy") == pytest.approx(0.5)
    assert t.value("precision:apple") == pytest.approx(0.5)


def test_spec_rejects_unknown_keys_metrics_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown metric .bogus."):
        parse_gate_spec({"metrics": {"bogus": {}}})
    with pytest.raises(ConfigError, match=r"slices\.minsize"):
        parse_gate_spec({"slices": {"minsize": 3}})
    bad = tmp_path / "gate.yaml"
    bad.write_text("metrics: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_gate_spec(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_gate_spec(tmp_path / "missing.yaml")
    frames, base, cand = history({"n": (10, 1.0, 1.0)})
    with pytest.raises(ConfigError, match="recall:durian"):
        judge(frames, base, cand, CLASSES, parse_gate_spec({"metrics": {"recall:durian": {}}}))
    assert spec_digest(SPEC) == spec_digest(GateSpec.model_validate(SPEC.model_dump()))
