"""The pure promotion rule and feedback accuracy."""

from __future__ import annotations

import pytest

from runtime.shadow.promotion import FeedbackScore, PromotionRule, feedback_accuracy, judge

RULE = PromotionRule(min_frames=100, min_agreement=0.95, max_accuracy_drop=0.05, min_corrected=4)


@pytest.mark.parametrize(
    ("compared", "agreed", "feedback", "outcome", "words"),
    [
        (99, 99, None, "wait", "99/100 frames"),
        (100, 94, None, "reject", "below 95.00%"),
        (100, 95, None, "promote", "no corrected frames"),
        (200, 199, FeedbackScore(10, 0.8, 0.8), "promote", "accuracy on 10 corrected"),
        (200, 199, FeedbackScore(10, 0.8, 0.75), "promote", "75.00%"),  # drop == δ holds
        (200, 199, FeedbackScore(10, 0.8, 0.7), "reject", "drop 10.00%"),
        (200, 199, FeedbackScore(3, 0.9, 0.0), "promote", "no corrected"),  # too few to count
        (200, 199, FeedbackScore(10, 0.5, 0.9), "promote", "90.00%"),  # better is fine
    ],
)
def test_judge_when_counts_and_feedback_vary(
    compared: int, agreed: int, feedback: FeedbackScore | None, outcome: str, words: str
) -> None:
    v = judge(RULE, compared, agreed, feedback)
    assert v.outcome == outcome
    assert words in v.reason


def test_judge_when_rule_says_measure_only_never_promotes() -> None:
    rule = RULE.model_copy(update={"promote": False})
    assert judge(rule, 500, 500, None).outcome == "wait"
    assert judge(rule, 500, 10, None).outcome == "reject"


def test_feedback_accuracy_when_rows_mix_right_wrong_and_missing() -> None:
    rows = [("2", "2", "2"), ("7", "2", "7"), ("3", "3", None), ("1", "4", "4")]
    score = feedback_accuracy(rows)
    assert score == FeedbackScore(4, 0.5, 0.5)
    assert feedback_accuracy([]) is None


def test_rule_when_unknown_key_is_rejected() -> None:
    with pytest.raises(ValueError):
        PromotionRule.model_validate({"min_frame": 3})
