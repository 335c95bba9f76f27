"""The pure ontology core: changes in order, the mapping they give, and refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from runtime.ontology import (
    Change,
    OntologyChangeError,
    apply_changes,
    mapping_between,
)

CHANGES = TypeAdapter(list[Change])


def changes(*raw: dict[str, Any]) -> list[Change]:
    return CHANGES.validate_python(list(raw))


def test_merge_split_rename_delete_when_applied_in_order() -> None:
    new, m = apply_changes(
        ["cat", "dog", "car", "bus", "bike"],
        changes(
            {"op": "merge", "sources": ["cat", "dog"], "into": "animal"},
            {"op": "split", "source": "car", "into": ["sedan", "truck"]},
            {"op": "rename", "old": "bus", "new": "coach"},
            {"op": "delete", "name": "bike"},
            {"op": "create", "name": "person"},
        ),
    )
    assert new == ["animal", "sedan", "truck", "coach", "person"]
    assert m.convert("cat").label == "animal" and m.convert("cat").status == "converted"
    assert m.convert("bus").label == "coach"
    assert m.convert("car").status == "review"
    assert m.convert("car").options == ("sedan", "truck")
    assert m.convert("bike").status == "dropped"
    assert m.convert("person").status == "same"  # already a new class
    assert m.to_manifest_mapping() == {"cat": "animal", "dog": "animal", "bus": "coach"}


def test_split_with_a_rule_converts_boxes_when_the_rule_decides() -> None:
    rule = {"by": "aspect", "threshold": 1.5, "above": "truck", "below": "sedan"}
    _, m = apply_changes(
        ["car"], changes({"op": "split", "source": "car", "into": ["sedan", "truck"], "rule": rule})
    )
    assert m.convert("car", [0, 0, 40, 10]).label == "truck"
    assert m.convert("car", [0, 0, 10, 10]).label == "sedan"
    assert m.convert("car").status == "review"  # a whole-image label has no box to judge


def test_later_changes_follow_earlier_ones_when_chained() -> None:
    new, m = apply_changes(
        ["a", "b", "c"],
        changes(
            {"op": "rename", "old": "a", "new": "x"},
            {"op": "merge", "sources": ["x", "b"], "into": "y"},
            {"op": "split", "source": "c", "into": ["c1", "c2"]},
            {"op": "rename", "old": "c1", "new": "k"},
        ),
    )
    assert new == ["y", "k", "c2"]
    assert m.convert("a").label == "y" and m.convert("b").label == "y"
    assert m.convert("c").options == ("k", "c2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"op": "rename", "old": "zzz", "new": "q"}, "change 1 (rename): no class 'zzz'"),
        ({"op": "rename", "old": "a", "new": "b"}, "class 'b' already exists"),
        ({"op": "merge", "sources": ["a", "a"], "into": "q"}, "a source is named twice"),
        ({"op": "create", "name": "a"}, "class 'a' already exists"),
        ({"op": "split", "source": "a", "into": ["b", "q"]}, "class 'b' already exists"),
    ],
)
def test_change_is_refused_when_it_does_not_apply(change: dict[str, Any], message: str) -> None:
    with pytest.raises(OntologyChangeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_changes(["a", "b"], changes(change))


def test_last_class_cannot_be_deleted() -> None:
    with pytest.raises(OntologyChangeError, match="last class"):
        apply_changes(["a"], changes({"op": "delete", "name": "a"}))


def test_device_mapping_falls_back_to_names_when_it_skipped_a_version() -> None:
    ch = changes({"op": "rename", "old": "b", "new": "c"})
    m = mapping_between(["a", "old"], ["a", "c"], {"old": "c"}, ch)  # changes do not replay
    assert m.convert("old").label == "c" and m.convert("a").status == "same"
    exact = mapping_between(["a", "b"], ["a", "c"], {}, ch)
    assert exact.convert("b").label == "c"


NAMES = st.sampled_from([f"k{i}" for i in range(8)])


@st.composite
def change_lists(draw: st.DrawFn) -> tuple[list[str], list[dict[str, Any]]]:
    classes = draw(st.lists(NAMES, min_size=1, max_size=5, unique=True))
    return classes, draw(
        st.lists(
            st.one_of(
                st.builds(lambda n: {"op": "create", "name": n}, NAMES),
                st.builds(lambda a, b: {"op": "rename", "old": a, "new": b}, NAMES, NAMES),
                st.builds(
                    lambda s, i: {"op": "merge", "sources": s, "into": i},
                    st.lists(NAMES, min_size=2, max_size=3, unique=True),
                    NAMES,
                ),
                st.builds(
                    lambda s, i: {"op": "split", "source": s, "into": i},
                    NAMES,
                    st.lists(NAMES, min_size=2, max_size=3, unique=True),
                ),
                st.builds(lambda n: {"op": "delete", "name": n}, NAMES),
            ),
            max_size=5,
        )
    )


@settings(max_examples=100, deadline=None)
@given(case=change_lists())
def test_every_old_class_lands_in_the_new_list_when_changes_apply(
    case: tuple[list[str], list[dict[str, Any]]],
) -> None:
    classes, raw = case
    try:
        new, m = apply_changes(classes, changes(*raw))
    except OntologyChangeError:
        return
    assert len(set(new)) == len(new) and new
    for c in classes:
        conv = m.convert(c)
        if conv.ok:
            assert conv.label in new
        elif conv.status == "review":
            assert set(conv.options) <= set(new) and len(conv.options) >= 2
    if not raw:
        assert m.identity()


def test_operator_feedback_with_an_old_label_converts_or_is_refused_clearly() -> None:
    from runtime.bundle.manifest import Ontology
    from runtime.errors import ConfigError
    from runtime.operator import _check_label

    onto = Ontology(
        id="t",
        version=2,
        classes=["animal", "sedan", "truck"],
        changes=changes(
            {"op": "merge", "sources": ["cat", "dog"], "into": "animal"},
            {"op": "split", "source": "car", "into": ["sedan", "truck"]},
            {"op": "delete", "name": "bike"},
        ),
    )
    assert _check_label(onto, "animal") == ("animal", None)
    assert _check_label(onto, "cat") == ("animal", "cat")
    with pytest.raises(ConfigError) as e:
        _check_label(onto, "car")
    assert str(e.value) == (
        "label 'car' is from ontology version 1: in version 2 'car' was split into 'sedan', "
        "'truck'; choose one of them (animal, sedan, truck)"
    )
    with pytest.raises(ConfigError, match="'bike' was deleted"):
        _check_label(onto, "bike")
    with pytest.raises(ConfigError, match="unknown label 'zebra': the active bundle's ontology"):
        _check_label(onto, "zebra")
