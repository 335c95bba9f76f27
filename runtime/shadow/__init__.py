"""Shadow-mode A/B: measure a candidate bundle on live frames before it serves.

``compare`` (pure per-frame comparison and aggregates), ``promotion`` (the pure promotion
rule), ``report`` (the persisted ``shadow.json``), ``runner`` (the candidate's worker process
behind a bounded, shedding queue), ``worker`` (that process), ``manager`` (the service-side
glue: stage into the inactive slot, run, judge, promote through the normal swap).
"""

from __future__ import annotations

from runtime.shadow.compare import FrameComparison, Histogram, ShadowStats, compare
from runtime.shadow.promotion import FeedbackScore, PromotionRule, Verdict, judge
from runtime.shadow.report import ShadowReport, load_report

__all__ = [
    "FeedbackScore",
    "FrameComparison",
    "Histogram",
    "PromotionRule",
    "ShadowReport",
    "ShadowStats",
    "Verdict",
    "compare",
    "judge",
    "load_report",
]
