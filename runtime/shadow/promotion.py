"""The promotion rule: when a shadow candidate may replace production, and when it is rejected.

Pure: :func:`judge` looks at the numbers only. The rule comes with the hub's shadow rollout
(``POST /admin/shadow/rollouts``) and is judged once the candidate has answered
``min_frames`` frames:

1. frame agreement with production must be at least ``min_agreement``;
2. where humans corrected or confirmed frames that both models saw (corrective feedback in the
   device's sample store, see :func:`feedback_accuracy`), and there are at least
   ``min_corrected`` of them, the candidate's accuracy on them must not be lower than
   production's by more than ``max_accuracy_drop`` (δ). Without enough feedback this clause
   does not apply.

All clauses hold → ``promote`` (the device swaps the candidate in through the normal
activation → trial → commit/rollback path); one fails → ``reject`` (the candidate is dropped
and reported). Before ``min_frames`` → ``wait``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FeedbackScore", "PromotionRule", "Verdict", "feedback_accuracy", "judge"]


class PromotionRule(BaseModel):
    """Stored with the shadow rollout on the hub; travels to the device with the candidate."""

    model_config = ConfigDict(extra="forbid")
    min_frames: int = Field(default=500, ge=1, description="frames both models must answer")
    min_agreement: float = Field(
        default=0.98, ge=0, le=1, description="lowest frame agreement that can promote"
    )
    max_accuracy_drop: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="δ: candidate accuracy on corrected frames may be at most this much below "
        "production's",
    )
    min_corrected: int = Field(
        default=1, ge=1, description="corrected frames needed before the accuracy clause applies"
    )
    promote: bool = Field(default=True, description="false: measure and report only, never promote")


@dataclass(frozen=True)
class FeedbackScore:
    """Accuracy of both models on frames with human feedback that both saw."""

    n: int
    production: float
    candidate: float


def feedback_accuracy(
    rows: Iterable[tuple[str, str | None, str | None]],
) -> FeedbackScore | None:
    """Score ``(true label, production label, candidate label)`` rows; None when there are none.

    A ``None`` label (the model gave no answer for that item) is wrong.
    """
    n = prod_ok = cand_ok = 0
    for truth, prod, cand in rows:
        n += 1
        prod_ok += int(prod == truth)
        cand_ok += int(cand == truth)
    if n == 0:
        return None
    return FeedbackScore(n, prod_ok / n, cand_ok / n)


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["wait", "promote", "reject"]
    reason: str


def judge(
    rule: PromotionRule, compared: int, agreed: int, feedback: FeedbackScore | None
) -> Verdict:
    """Apply ``rule`` to the shadow counts and the feedback score (see the module story)."""
    if compared < rule.min_frames:
        return Verdict("wait", f"{compared}/{rule.min_frames} frames compared")
    agreement = agreed / compared
    if agreement < rule.min_agreement:
        return Verdict(
            "reject",
            f"agreement {agreement:.2%} over {compared} frames is below {rule.min_agreement:.2%}",
        )
    parts = [f"agreement {agreement:.2%} over {compared} frames"]
    if feedback is not None and feedback.n >= rule.min_corrected:
        drop = feedback.production - feedback.candidate
        if drop > rule.max_accuracy_drop + 1e-12:
            return Verdict(
                "reject",
                f"accuracy on {feedback.n} corrected frames {feedback.candidate:.2%} vs "
                f"production {feedback.production:.2%}: drop {drop:.2%} over "
                f"{rule.max_accuracy_drop:.2%}",
            )
        parts.append(
            f"accuracy on {feedback.n} corrected frames {feedback.candidate:.2%} "
            f"(production {feedback.production:.2%})"
        )
    else:
        parts.append("no corrected frames to compare accuracy")
    if not rule.promote:
        return Verdict("wait", "; ".join(parts) + "; rule says measure only")
    return Verdict("promote", "; ".join(parts))
