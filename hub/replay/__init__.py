"""Measure before release: replay a candidate bundle on production history and gate it.

Pure cores (no I/O): :mod:`~hub.replay.spec` (the gate spec), :mod:`~hub.replay.metrics`
(metrics as sums of per-frame counts), :mod:`~hub.replay.gate` (slices, paired bootstrap,
decision), :mod:`~hub.replay.behaviour` (models of the people in the loop) and
:mod:`~hub.replay.kpis` (business KPIs under such a model). Thin shells: the history dataset,
the runner (the device's own pipeline code over worker processes), the report and blessings.
"""

from __future__ import annotations

from hub.replay.behaviour import BEHAVIOURS, BehaviourModel, FrameEffect, build_behaviour, register
from hub.replay.frames import Guess, HistoryFrame, Outcome, PredItem, TruthObject
from hub.replay.gate import GateDecision, Judgement, judge
from hub.replay.kpis import kpis
from hub.replay.spec import GateSpec, load_gate_spec, parse_gate_spec, spec_digest

__all__ = [
    "BEHAVIOURS",
    "BehaviourModel",
    "FrameEffect",
    "GateDecision",
    "GateSpec",
    "Guess",
    "HistoryFrame",
    "Judgement",
    "Outcome",
    "PredItem",
    "TruthObject",
    "build_behaviour",
    "judge",
    "kpis",
    "load_gate_spec",
    "parse_gate_spec",
    "register",
    "spec_digest",
]
