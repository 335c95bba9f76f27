"""The scorer: per-strategy scores plus their weighted mean as the priority."""

from __future__ import annotations

import pytest

from runtime.errors import ConfigError
from runtime.pipeline.prediction import Item, Prediction, StageResult
from runtime.sampling import (
    REGISTRY,
    SampleContext,
    Scorer,
    Strategy,
    StrategyOptions,
    make_scorer,
)


def frame(vector: list[float]) -> Prediction:
    it = Item(class_id=0, label="0", score=max(vector), scores=vector)
    return Prediction(frame_id="f", stages={"s": StageResult("s", "classification", [it], 1.0)})


def test_registry_names_every_strategy_when_imported() -> None:
    assert set(REGISTRY) == {
        "margin",
        "entropy",
        "least_confidence",
        "random",
        "close_to_threshold",
        "disagreement",
        "rules",
        "novelty",
        "rare_class",
    }
    for name, factory in REGISTRY.items():
        s = factory(StrategyOptions())
        assert isinstance(s, Strategy)
        assert s.name == name


def test_scorer_returns_weighted_mean_when_weights_differ() -> None:
    p = frame([0.6, 0.3, 0.1])  # margin 0.7, least confidence 0.4
    scores, priority = make_scorer({"margin": 3.0, "least_confidence": 1.0}).score(p)
    assert scores == pytest.approx({"margin": 0.7, "least_confidence": 0.4})
    assert priority == pytest.approx((3 * 0.7 + 0.4) / 4)


def test_scorer_reports_but_ignores_strategy_when_weight_is_zero() -> None:
    p = frame([0.6, 0.3, 0.1])
    scores, priority = make_scorer({"margin": 1.0, "entropy": 0.0}).score(p)
    assert set(scores) == {"margin", "entropy"}
    assert priority == pytest.approx(0.7)


def test_scorer_ranks_confused_frame_first_when_weights_mix_strategies() -> None:
    scorer = make_scorer({"margin": 1.0, "entropy": 1.0, "random": 0.1}, seed=3)
    confused = scorer.score(frame([0.4, 0.35, 0.25]))[1]
    sure = scorer.score(frame([0.98, 0.01, 0.01]))[1]
    assert confused > sure


def test_scorer_is_reproducible_when_seed_is_fixed() -> None:
    a = make_scorer({"random": 1.0}, seed=5)
    b = make_scorer({"random": 1.0}, seed=5)
    p = frame([0.5, 0.5])
    assert [a.score(p) for _ in range(5)] == [b.score(p) for _ in range(5)]


def test_scorer_clamps_when_a_strategy_misbehaves() -> None:
    class Wild:
        name = "wild"

        def score(self, prediction: Prediction, context: SampleContext | None = None) -> float:
            return 7.0

    scores, priority = Scorer({"wild": Wild()}, {"wild": 1.0}).score(frame([1.0]))
    assert scores == {"wild": 1.0}
    assert priority == 1.0


@pytest.mark.parametrize(
    ("weights", "reducer", "needle"),
    [
        ({"nope": 1.0}, "max", "unknown strategy 'nope'"),
        ({"margin": 1.0}, "median", "unknown 'median'"),
        ({"margin": -1.0}, "max", ">= 0"),
        ({"margin": 0.0}, "max", "above 0"),
        ({}, "max", "at least one"),
    ],
)
def test_make_scorer_raises_config_error_when_config_is_bad(
    weights: dict[str, float], reducer: str, needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        make_scorer(weights, reducer)
