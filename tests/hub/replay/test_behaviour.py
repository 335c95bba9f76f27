"""Human-behaviour models and the business KPIs under them, against hand computations."""

from __future__ import annotations

import pytest

from hub.replay.behaviour import BEHAVIOURS, FittedFeedback, build_behaviour
from hub.replay.frames import Guess, HistoryFrame, Outcome, PredItem, TruthObject
from hub.replay.kpis import kpis
from hub.replay.spec import BehaviourSpec, parse_gate_spec
from runtime.errors import ConfigError


def item(label: str, score: float, *guesses: tuple[str, float]) -> Outcome:
    return Outcome(items=(PredItem(label, score, top_k=tuple(Guess(a, b) for a, b in guesses)),))


FRAMES = [HistoryFrame(id=f"f{i}", truth=(TruthObject(t),)) for i, t in
          enumerate(["apple", "banana", "cherry", "banana"])]  # fmt: skip
OUTCOMES = [
    item("apple", 0.9),  # confident and right: nothing to do
    item("cherry", 0.95),  # confident and wrong: noticed half the time, then corrected
    item("apple", 0.5, ("apple", 0.5), ("cherry", 0.4), ("banana", 0.1)),  # truth 2nd: pick
    item("apple", 0.6, ("apple", 0.6), ("cherry", 0.3), ("banana", 0.1)),  # truth 3rd: correct
]


def test_chooser_kpis_match_a_hand_computation() -> None:
    spec = parse_gate_spec(
        {
            "events": {"classes": ["banana"], "people_miss_rate": 0.3},
            "behaviour": {
                "model": "top_k_chooser",
                "params": {"k": 2, "confident": 0.8, "p_pick_right": 0.8, "p_notice_wrong": 0.5},
            },
            "costs": {"pick": 0.5, "correction": 5.0, "missed_event": 50.0, "frames_per_day": 1000},
        }
    )
    model = build_behaviour(spec.behaviour, FRAMES)
    got = kpis(FRAMES, OUTCOMES, model, spec)
    # actions: 0 + 0.5 + 1 + 1 = 2.5 over 4 frames
    assert got["actions_per_100_frames"] == pytest.approx(62.5)
    # cost: 0 + 0.5*5 + (0.8*0.5 + 0.2*5) + 5 = 8.9; right in the end: 1 + 0.5 + 1 + 1 = 3.5
    assert got["errors_left_pct"] == pytest.approx(100 * 0.5 / 4)
    # events (banana): frames 2 and 4; caught 0.5 + 1 -> missed 0.5 of 2
    assert got["events"] == 2
    assert got["events_missed_pct"] == pytest.approx(25.0)
    # the system itself named neither banana right
    assert got["events_people_miss_caught_pct"] == pytest.approx(0.0)
    # (8.9 + 0.5 missed * 50) / 4 frames * 1000 frames a day
    assert got["cost_per_day"] == pytest.approx((8.9 + 25.0) / 4 * 1000)


def test_alert_reviewer_never_sees_what_is_not_alerted() -> None:
    spec = parse_gate_spec(
        {
            "events": {"classes": ["banana"], "alert_threshold": 0.5},
            "behaviour": {"model": "alert_reviewer", "params": {"p_confirm_true": 0.9}},
            "costs": {"review": 2.0, "missed_event": 10.0, "frames_per_day": 4},
        }
    )
    outs = [item("banana", 0.9), item("banana", 0.9), item("apple", 0.9), item("apple", 0.9)]
    # frame 0 apple: false alert reviewed; frame 1 banana: true alert, confirmed 0.9;
    # frame 3 banana: not alerted, never seen, missed.
    got = kpis(FRAMES, outs, build_behaviour(spec.behaviour, FRAMES), spec)
    assert got["actions_per_100_frames"] == pytest.approx(50.0)
    assert got["events_missed_pct"] == pytest.approx(100 * (0.1 + 1) / 2)
    assert got["events_people_miss_caught_pct"] == pytest.approx(50.0)
    assert got["cost_per_day"] == pytest.approx((2 * 2.0 + 1.1 * 10.0) / 4 * 4)


def test_fitted_model_learns_rates_from_recorded_feedback() -> None:
    def rec(truth: str, said: str, kind: str | None) -> HistoryFrame:
        return HistoryFrame(
            id=f"{truth}{said}{kind}",
            truth=(TruthObject(truth),),
            production=item(said, 0.9),
            feedback={"kind": kind} if kind else None,
        )

    history = [rec("a", "a", "confirm"), rec("a", "a", None), rec("a", "a", None),
               rec("a", "b", "correct"), rec("a", "b", "correct"), rec("a", "b", None)]  # fmt: skip
    m = FittedFeedback.fit(history, prior=0.0)
    assert (m.p_confirm_right, m.p_correct_wrong) == pytest.approx((1 / 3, 2 / 3))
    smoothed = build_behaviour(BehaviourSpec(model="fitted_feedback"), history)
    assert isinstance(smoothed, FittedFeedback)
    assert smoothed.p_correct_wrong == pytest.approx(3 / 5)


def test_behaviour_registry_rejects_unknown_models_and_params() -> None:
    assert {"top_k_chooser", "alert_reviewer", "fitted_feedback"} <= set(BEHAVIOURS)
    with pytest.raises(ConfigError, match="unknown model 'psychic'"):
        build_behaviour(BehaviourSpec(model="psychic"), [])
    with pytest.raises(ConfigError, match=r"top_k_chooser.*kk"):
        build_behaviour(BehaviourSpec(model="top_k_chooser", params={"kk": 3}), [])
