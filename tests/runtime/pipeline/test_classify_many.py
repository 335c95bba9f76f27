"""Classification over many classes gives the items the plain computation gives, bit for bit.

Beyond a few dozen classes :func:`~runtime.pipeline.postprocess.classify` picks the top-k from
the softmax's exponentials before dividing them, and leaves the full score vector in numpy
until an item's ``scores`` is read. Here it is held, on random rows with exact ties, ties that
only appear after the division, underflow to zero, NaN and infinities, to the straightforward
form it replaces: every probability, a stable descending sort, every value made a Python float.
"""

from __future__ import annotations

import copy
import pickle
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime.pipeline.postprocess as post
from runtime.pipeline.graph import ClassifyPost
from runtime.pipeline.postprocess import classify
from runtime.pipeline.prediction import Item

_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference(logits: np.ndarray, spec: ClassifyPost, classes: list[str]) -> list[Item]:
    """The plain computation: all probabilities, top-k by a stable descending sort."""
    x = logits.reshape(1, -1) if logits.ndim <= 1 else logits.reshape(logits.shape[0], -1)
    z = x.astype(np.float32)
    if spec.type == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    elif spec.type == "sigmoid":
        probs = post.sigmoid(z)
    else:
        probs = z
    k = min(spec.top_k, probs.shape[1])
    items = []
    for row, order in zip(
        probs.tolist(), np.argsort(-probs, axis=1, kind="stable")[:, :k].tolist(), strict=True
    ):
        label = [classes[i] if i < len(classes) else str(i) for i in order]
        items.append(
            Item(
                class_id=order[0],
                label=label[0],
                score=row[order[0]],
                scores=row,
                top_k=[(lbl, row[i]) for lbl, i in zip(label, order, strict=True)],
            )
        )
    return items


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)  # NaN == NaN, -0.0 != 0.0


def _exact(item: Item) -> tuple[Any, ...]:
    scores = item.scores
    return (
        item.class_id,
        item.label,
        _bits(item.score),
        None if scores is None else b"".join(_bits(s) for s in scores),
        item.box,
        item.parent,
        [(lbl, _bits(s)) for lbl, s in item.top_k],
    )


def _row(rng: np.random.Generator, n: int, mode: str) -> np.ndarray:
    row: np.ndarray
    if mode == "normal":
        return rng.normal(size=n) * rng.choice([0.01, 1.0, 10.0])
    if mode == "coarse":  # many exact ties, also on the top-k boundary
        return np.round(rng.normal(size=n) * 2)
    if mode == "underflow":  # most probabilities underflow to exactly 0 and tie there
        row = rng.normal(size=n) * 200
        row[rng.integers(0, n, 3)] = 300
        return row
    if mode == "equal":
        return np.full(n, rng.normal())
    if mode == "ulps":  # neighbouring float32 logits: their probabilities may round alike
        base = np.float32(rng.normal())
        row = rng.normal(size=n).astype(np.float32) - 6
        steps = rng.integers(-3, 4, size=n // 3)
        row[rng.integers(0, n, size=n // 3)] = base + steps * np.spacing(base)
        return row
    if mode == "nan":
        row = rng.normal(size=n)
        row[rng.integers(0, n)] = np.nan
        return row
    if mode == "inf":
        row = rng.normal(size=n)
        row[rng.integers(0, n, 2)] = rng.choice([np.inf, -np.inf], 2)
        return row
    raise AssertionError(mode)


_MODES = ["normal", "coarse", "underflow", "equal", "ulps", "nan", "inf"]


@_SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    modes=st.lists(st.sampled_from(_MODES), min_size=1, max_size=3),
    n_classes=st.sampled_from([65, 66, 100, 257, 1000]),
    top_k=st.integers(1, 12),
    kind=st.sampled_from(["softmax", "softmax", "sigmoid", "identity"]),
    dtype=st.sampled_from([np.float32, np.float32, np.float64, np.float16]),
)
def test_classify_many_classes_gives_the_plain_items_when_rows_are_random(
    seed: int, modes: list[str], n_classes: int, top_k: int, kind: str, dtype: Any
) -> None:
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        logits = np.stack([_row(rng, n_classes, m) for m in modes]).astype(dtype)
        spec = ClassifyPost(type=kind, top_k=top_k)
        classes = [f"c{i}" for i in range(n_classes - 3)]  # the last ids have no name
        want = [_exact(i) for i in _reference(logits, spec, classes)]
        got = classify([logits], spec, classes)
        assert [_exact(i) for i in got] == want


@pytest.mark.parametrize("top_k", [1, 5, 999, 1000, 1200])
def test_classify_many_classes_gives_the_plain_items_when_top_k_reaches_the_class_count(
    top_k: int,
) -> None:
    logits = np.random.default_rng(5).normal(size=(2, 1000)).astype(np.float32)
    spec = ClassifyPost(type="softmax", top_k=top_k)
    got = classify([logits], spec, [])
    assert [_exact(i) for i in got] == [_exact(i) for i in _reference(logits, spec, [])]


def _tie_after_division() -> np.ndarray:
    """A row where classes 1 and 2 have neighbouring logits and different exponentials but
    the same probability once divided by the sum; class 1 has the smaller logit."""
    for v in np.linspace(-0.06, -0.01, 2000, dtype=np.float32):
        row = np.full((1, 200), -30.0, np.float32)
        row[0, 7] = 0.0
        row[0, 1], row[0, 2] = v, np.nextafter(v, np.float32(1))
        z = np.exp(row - row.max())
        probs = post.softmax(row, axis=1)
        if z[0, 1] != z[0, 2] and probs[0, 1] == probs[0, 2]:
            return row
    raise AssertionError("no such row found")


def test_classify_many_classes_takes_the_full_path_when_a_probability_ties_across_the_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logits = _tie_after_division()
    calls: list[int] = []
    full_top_k = post._top_k

    def counted(probs: np.ndarray, k: int) -> list[list[int]]:
        calls.append(k)
        return full_top_k(probs, k)

    monkeypatch.setattr(post, "_top_k", counted)
    for k in (1, 2, 3):
        spec = ClassifyPost(type="softmax", top_k=k)
        got = classify([logits], spec, [])
        assert [_exact(i) for i in got] == [_exact(i) for i in _reference(logits, spec, [])]
        assert [lbl for lbl, _ in got[0].top_k] == ["7", "1", "2"][:k]  # the tie: lower id
    assert calls == [2]  # only the cut between the 2nd and 3rd pick ties


def test_items_with_lazy_scores_copy_pickle_and_serialise_like_plain_items() -> None:
    logits = np.random.default_rng(6).normal(size=(1, 500)).astype(np.float32)
    spec = ClassifyPost(type="softmax", top_k=3)
    lazy = classify([logits], spec, [])[0]
    plain = _reference(logits, spec, [])[0]
    assert lazy.to_dict() == plain.to_dict()
    for again in (copy.deepcopy(lazy), pickle.loads(pickle.dumps(lazy)), copy.copy(lazy)):
        assert again == plain and again.scores == plain.scores
    lazy.scores = [1.0]
    assert lazy.scores == [1.0] and lazy != plain


def test_lazy_scores_do_not_follow_the_callers_array_when_it_changes_later() -> None:
    logits = np.random.default_rng(7).normal(size=(1, 300)).astype(np.float32)
    want = logits[0].tolist()
    item = classify([logits], ClassifyPost(type="identity", top_k=2), [])[0]
    logits[:] = 0
    assert item.scores == want


def test_items_compare_by_every_field_and_stay_unhashable_when_built_by_hand() -> None:
    a = Item(1, "b", 0.5, box=(1.0, 2.0, 3.0, 4.0), scores=[0.5, 0.5], parent=0)
    assert a == Item(1, "b", 0.5, box=(1.0, 2.0, 3.0, 4.0), scores=[0.5, 0.5], parent=0)
    assert a != Item(1, "b", 0.5, box=(1.0, 2.0, 3.0, 4.0), scores=[0.5, 0.5], parent=1)
    assert a != (1, "b", 0.5) and a.top_k == [] and Item(0, "a", 1.0).top_k is not a.top_k
    assert repr(a).startswith("Item(class_id=1, label='b', score=0.5, box=(1.0, 2.0, 3.0, 4.0)")
    with pytest.raises(TypeError):
        hash(a)
    assert Item.from_dict(a.to_dict()) == a
