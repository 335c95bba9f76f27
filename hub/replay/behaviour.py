"""Models of the people in the loop: what they do with what the system shows them.

A model answers, for one frame and one bundle's outcome on it, the **expected** effect of the
people: how many actions they take (picks, corrections, reviews), what those cost, how likely
each true object ends up right, and whether an event is caught. Expected values, not draws, so
the KPIs are exact for a history and a hand computation can check them.

Models are registered by name (:data:`BEHAVIOURS`, :func:`register`); the spec's
``behaviour: {model: NAME, params: {...}}`` picks one and its ``Params`` model validates the
parameters (unknown keys rejected). Built-ins, the seed's cases:

- ``top_k_chooser`` — the fruit scale. When the best score is at least ``confident`` the
  system answers alone; a wrong confident answer is corrected with probability
  ``p_notice_wrong`` (else the error stays). When unsure it offers its ``k`` best guesses: if the
  truth is among them the person picks it with probability ``p_pick_right`` (one pick) and
  otherwise types a correction; if the truth is not offered, they correct.
- ``alert_reviewer`` — an alerting system. The person sees only alerts: a true alert is
  confirmed with ``p_confirm_true``, a false one rejected with ``p_reject_false``; each review is
  one action. An event that did not alert is never seen (partial correction): it is missed.
- ``fitted_feedback`` — fitted from the recorded feedback of the history: how often people
  confirmed a right production answer and corrected a wrong one (Laplace-smoothed), applied to
  the candidate's answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.replay.frames import HistoryFrame, Outcome, PredItem
from hub.replay.metrics import object_pairs
from hub.replay.spec import BehaviourSpec, Costs, EventSpec
from runtime.errors import ConfigError

__all__ = [
    "BEHAVIOURS",
    "AlertReviewer",
    "BehaviourModel",
    "FittedFeedback",
    "FrameEffect",
    "TopKChooser",
    "build_behaviour",
    "register",
]


@dataclass(frozen=True)
class FrameEffect:
    """The people's expected effect on one frame."""

    actions: float = 0.0  # expected human actions
    cost: float = 0.0  # expected cost of those actions
    objects: int = 0  # true objects on the frame
    right: float = 0.0  # expected true objects that end up with the right label
    event: bool = False  # the frame holds a true event
    system_caught: float = 0.0  # the system flagged the event (alert / right answer)
    caught: float = 0.0  # probability the event is caught in the end (system + people)


class BehaviourModel(Protocol):
    """What a behaviour model does: the expected effect of people on one frame's outcome."""

    def effect(
        self, frame: HistoryFrame, outcome: Outcome, costs: Costs, events: EventSpec, iou: float
    ) -> FrameEffect: ...


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Builder = Callable[[dict[str, Any], Sequence[HistoryFrame]], BehaviourModel]
BEHAVIOURS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Add a behaviour model builder under ``name`` (a plug-in may add its own)."""

    def add(builder: Builder) -> Builder:
        BEHAVIOURS[name] = builder
        return builder

    return add


def build_behaviour(spec: BehaviourSpec, history: Sequence[HistoryFrame]) -> BehaviourModel:
    """The model the spec names, with its parameters checked. Raises ConfigError."""
    builder = BEHAVIOURS.get(spec.model)
    if builder is None:
        known = ", ".join(sorted(BEHAVIOURS))
        raise ConfigError(f"behaviour.model: unknown model {spec.model!r} (known: {known})")
    return builder(spec.params, history)


def _params(model: type[_Params], raw: dict[str, Any], name: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "params"
        raise ConfigError(f"behaviour.params ({name}): {loc}: {first['msg']}") from e


def _event_flags(frame: HistoryFrame, outcome: Outcome, events: EventSpec) -> tuple[bool, bool]:
    """(the frame holds a true event, the outcome alerts on an event)."""
    ev = set(events.classes)
    is_event = any(t.label in ev for t in frame.truth)
    alerted = any(i.label in ev and i.score >= events.alert_threshold for i in outcome.items)
    return is_event, alerted


class TopKChooser:
    """The fruit scale: confident answers stand alone, unsure ones offer the k best guesses."""

    class Params(_Params):
        k: int = Field(default=2, ge=1, description="guesses offered when unsure")
        confident: float = Field(default=0.8, ge=0, le=1, description="score that answers alone")
        p_pick_right: float = Field(default=0.9, ge=0, le=1, description="picks the right guess")
        p_notice_wrong: float = Field(
            default=1.0, ge=0, le=1, description="corrects a wrong confident answer"
        )

    def __init__(self, params: Params) -> None:
        self.p = params

    def _object(
        self, truth: str, item: PredItem | None, costs: Costs
    ) -> tuple[float, float, float]:
        """(actions, cost, P(right in the end)) for one true object."""
        p = self.p
        if item is not None and item.score >= p.confident:
            if item.label == truth:
                return 0.0, 0.0, 1.0
            q = p.p_notice_wrong
            return q, q * costs.correction, q
        offered = [g.label for g in item.top_k[: p.k]] if item and item.top_k else []
        if item is not None and not offered:
            offered = [item.label]
        if truth in offered:
            pr = p.p_pick_right
            return 1.0, pr * costs.pick + (1 - pr) * costs.correction, 1.0
        return 1.0, costs.correction, 1.0

    def effect(
        self, frame: HistoryFrame, outcome: Outcome, costs: Costs, events: EventSpec, iou: float
    ) -> FrameEffect:
        actions = cost = right = 0.0
        ev = set(events.classes)
        sys_caught, caught, is_event = 0.0, 0.0, False
        for truth, item in object_pairs(frame, outcome, iou):
            a, c, r = self._object(truth.label, item, costs)
            actions, cost, right = actions + a, cost + c, right + r
            if truth.label in ev:
                is_event = True
                sys_caught = max(sys_caught, float(item is not None and item.label == truth.label))
                caught = max(caught, r)
        return FrameEffect(
            actions,
            cost,
            len(frame.truth),
            right,
            is_event,
            sys_caught,
            caught if is_event else 0.0,
        )


@register("top_k_chooser")
def _chooser(raw: dict[str, Any], history: Sequence[HistoryFrame]) -> BehaviourModel:
    return TopKChooser(_params(TopKChooser.Params, raw, "top_k_chooser"))


class AlertReviewer:
    """People review alerts only: they confirm or reject what is alerted, never see the rest."""

    class Params(_Params):
        p_confirm_true: float = Field(default=0.95, ge=0, le=1, description="confirms a true alert")
        p_reject_false: float = Field(default=0.9, ge=0, le=1, description="rejects a false alert")

    def __init__(self, params: Params) -> None:
        self.p = params

    def effect(
        self, frame: HistoryFrame, outcome: Outcome, costs: Costs, events: EventSpec, iou: float
    ) -> FrameEffect:
        is_event, alerted = _event_flags(frame, outcome, events)
        right = float(
            sum(1 for t, i in object_pairs(frame, outcome, iou) if i and i.label == t.label)
        )
        if not alerted:
            return FrameEffect(0.0, 0.0, len(frame.truth), right, is_event, 0.0, 0.0)
        caught = self.p.p_confirm_true if is_event else 0.0
        return FrameEffect(
            1.0, costs.review, len(frame.truth), right, is_event, float(is_event), caught
        )


@register("alert_reviewer")
def _reviewer(raw: dict[str, Any], history: Sequence[HistoryFrame]) -> BehaviourModel:
    return AlertReviewer(_params(AlertReviewer.Params, raw, "alert_reviewer"))


class FittedFeedback:
    """People as the recorded feedback shows them: confirm rate on right, correct rate on wrong."""

    name: ClassVar[str] = "fitted_feedback"

    class Params(_Params):
        prior: float = Field(default=1.0, ge=0, description="Laplace smoothing of the rates")

    def __init__(self, p_confirm_right: float, p_correct_wrong: float, fitted_on: int) -> None:
        self.p_confirm_right = p_confirm_right
        self.p_correct_wrong = p_correct_wrong
        self.fitted_on = fitted_on

    @classmethod
    def fit(cls, history: Sequence[HistoryFrame], prior: float = 1.0) -> FittedFeedback:
        """Fit the two rates on frames with a production outcome and a whole-frame truth."""
        right = right_confirmed = wrong = wrong_corrected = 0
        for f in history:
            if f.production is None or not f.truth:
                continue
            best = max(f.production.items, key=lambda i: i.score, default=None)
            kind = (f.feedback or {}).get("kind")
            if best is not None and best.label == f.truth[0].label:
                right += 1
                right_confirmed += kind == "confirm"
            else:
                wrong += 1
                wrong_corrected += kind == "correct"
        return cls(
            (right_confirmed + prior) / (right + 2 * prior) if right or prior else 0.0,
            (wrong_corrected + prior) / (wrong + 2 * prior) if wrong or prior else 0.0,
            right + wrong,
        )

    def effect(
        self, frame: HistoryFrame, outcome: Outcome, costs: Costs, events: EventSpec, iou: float
    ) -> FrameEffect:
        actions = cost = right = 0.0
        ev = set(events.classes)
        sys_caught, caught, is_event = 0.0, 0.0, False
        for truth, item in object_pairs(frame, outcome, iou):
            ok = item is not None and item.label == truth.label
            if ok:
                a, c, r = self.p_confirm_right, self.p_confirm_right * costs.review, 1.0
            else:
                q = self.p_correct_wrong
                a, c, r = q, q * costs.correction, q
            actions, cost, right = actions + a, cost + c, right + r
            if truth.label in ev:
                is_event = True
                sys_caught = max(sys_caught, float(ok))
                caught = max(caught, r)
        return FrameEffect(actions, cost, len(frame.truth), right, is_event, sys_caught, caught)


@register("fitted_feedback")
def _fitted(raw: dict[str, Any], history: Sequence[HistoryFrame]) -> BehaviourModel:
    params = _params(FittedFeedback.Params, raw, "fitted_feedback")
    return FittedFeedback.fit(history, params.prior)
