"""The hub's pure remap of one sample, on Hypothesis-drawn class lists, changes and boxes: every
label that stays is a class of the new version, or the sample is back in the queue for review."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from hub.ontology import remap_sample
from runtime.ontology import Change, OntologyChangeError, apply_changes

NAMES = st.sampled_from([f"k{i}" for i in range(6)])
CHANGES = TypeAdapter(list[Change])
RULE = st.builds(
    lambda by, t: {"by": by, "threshold": t},
    st.sampled_from(["aspect", "area", "width", "height"]),
    st.floats(0.1, 100),
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[str], list[dict[str, Any]], list[list[Any]]]:
    classes = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    changes: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["rename", "merge", "split", "delete", "create"]))
        a, b = draw(NAMES), draw(NAMES)
        if kind == "rename":
            changes.append({"op": "rename", "old": a, "new": b})
        elif kind == "merge":
            changes.append({"op": "merge", "sources": [*sorted({a, b}), "k5"], "into": b})
        elif kind == "split":
            parts = draw(st.lists(NAMES, min_size=2, max_size=2, unique=True))
            ch: dict[str, Any] = {"op": "split", "source": a, "into": parts}
            if draw(st.booleans()):
                ch["rule"] = {**draw(RULE), "above": parts[0], "below": parts[1]}
            changes.append(ch)
        elif kind == "delete":
            changes.append({"op": "delete", "name": a})
        else:
            changes.append({"op": "create", "name": a})
    boxes = [
        [0, 0, draw(st.integers(1, 50)), draw(st.integers(1, 50)), draw(st.sampled_from(classes))]
        for _ in range(draw(st.integers(0, 4)))
    ]
    return classes, changes, boxes


@settings(max_examples=150, deadline=None)
@given(case=cases())
def test_remapped_labels_are_new_classes_or_the_sample_needs_review(
    case: tuple[list[str], list[dict[str, Any]], list[list[Any]]],
) -> None:
    classes, raw, boxes = case
    try:
        parsed = CHANGES.validate_python(raw)
        new_classes, mapping = apply_changes(classes, parsed)
    except (OntologyChangeError, ValueError):
        return
    meta = {
        "prediction": {"stages": {"d": {"items": [{"label": b[4], "box": b[:4]} for b in boxes]}}}
    }
    out = remap_sample(
        meta, {"boxes": boxes, "annotator": "a"}, "annotated", None, None, mapping, 2
    )
    assert out.meta["ontology_version"] == 2
    if out.needs_review:
        assert out.state == "pending" and out.annotation is None
        assert out.meta["annotation_before_review"]["boxes"] == boxes
        return
    assert out.annotation is not None
    assert all(b[4] in new_classes for b in out.annotation["boxes"])
    kept = [b for b in boxes if mapping.convert(b[4], b[:4]).ok]
    assert len(out.annotation["boxes"]) == len(kept)  # only boxes of deleted classes go


def test_a_correction_on_a_detection_is_split_by_the_rule_on_that_detections_box() -> None:
    changes = CHANGES.validate_python(
        [
            {
                "op": "split",
                "source": "circle",
                "into": ["big", "small"],
                "rule": {"by": "area", "threshold": 300, "above": "big", "below": "small"},
            }
        ]
    )
    _, mapping = apply_changes(["circle", "square"], changes)
    items = [{"label": "square", "box": [0, 0, 10, 10]}, {"label": "square", "box": [0, 0, 20, 20]}]
    meta: dict[str, Any] = {"prediction": {"stages": {"clf": {"items": items}}}}
    for item, want in ((0, "small"), (1, "big")):
        fb = {"kind": "correct", "label": "circle", "item": item, "who": "ana"}
        out = remap_sample({**meta, "feedback": fb}, None, "pending", fb, "square", mapping, 2)
        assert not out.needs_review
        assert out.feedback is not None and out.feedback["label"] == want
        assert out.meta["feedback"]["label"] == want
    whole = {"kind": "correct", "label": "circle", "item": None, "who": "ana"}
    out = remap_sample({"feedback": whole}, None, "pending", whole, None, mapping, 2)
    assert out.needs_review and out.feedback is None  # no box: a human picks
