"""Training refuses datasets that mix ontology versions without a mapping, converts with one."""

from __future__ import annotations

import pytest

from trainer.datasets import DatasetError
from trainer.datasets.align import OntologyStep, align_datasets
from trainer.datasets.model import Box, Dataset, Item


def ds(version: int, classes: list[str], *boxes: tuple[str, float]) -> Dataset:
    items = [
        Item(path=f"v{version}-{k}.png", width=100, height=50,
             boxes=[Box(x1=0, y1=0, x2=w, y2=10, label=lbl)])
        for k, (lbl, w) in enumerate(boxes)
    ]  # fmt: skip
    return Dataset(
        task="detection", classes=classes, ontology_id="cars", ontology_version=version,
        items=items,
    )  # fmt: skip


HISTORY = [
    OntologyStep(version=1, classes=["car", "bus", "bike"]),
    OntologyStep(
        version=2,
        classes=["truck", "sedan", "coach"],
        changes=[
            {
                "op": "split",
                "source": "car",
                "into": ["truck", "sedan"],
                "rule": {"by": "aspect", "threshold": 2, "above": "truck", "below": "sedan"},
            },
            {"op": "rename", "old": "bus", "new": "coach"},
            {"op": "delete", "name": "bike"},
        ],
    ),
]


def test_training_refuses_when_versions_mix_without_a_mapping() -> None:
    old = ds(1, ["car", "bus", "bike"], ("car", 30))
    new = ds(2, ["truck", "sedan", "coach"], ("coach", 10))
    with pytest.raises(DatasetError, match="mix versions 1, 2 of ontology 'cars' and no mapping"):
        align_datasets([old, new])


def test_older_items_are_converted_when_the_history_is_given() -> None:
    old = ds(1, ["car", "bus", "bike"], ("car", 30), ("car", 10), ("bus", 5), ("bike", 5))
    new = ds(2, ["truck", "sedan", "coach"], ("coach", 10))
    got = align_datasets([old, new], HISTORY)
    assert got.ontology_version == 2 and got.classes == ["truck", "sedan", "coach"]
    labels = [[b.label for b in i.boxes] for i in got.items]
    assert labels == [["truck"], ["sedan"], ["coach"], [], ["coach"]]


def test_items_needing_review_are_listed_when_a_split_has_no_rule() -> None:
    history = [HISTORY[0], HISTORY[1].model_copy(update={"changes": [
        {"op": "split", "source": "car", "into": ["truck", "sedan"]},
        {"op": "rename", "old": "bus", "new": "coach"},
        {"op": "delete", "name": "bike"},
    ]})]  # fmt: skip
    old = ds(1, ["car", "bus", "bike"], ("car", 30), ("bus", 5))
    with pytest.raises(DatasetError) as e:
        align_datasets([old, ds(2, ["truck", "sedan", "coach"])], history)
    assert [str(p) for p in e.value.problems] == [
        "dataset 0: v1-0.png box 0: needs review: 'car' was split into 'truck', 'sedan' "
        "(a human must choose)"
    ]


def test_a_single_older_dataset_is_converted_when_the_history_goes_further() -> None:
    got = align_datasets([ds(1, ["car", "bus", "bike"], ("car", 30), ("bus", 5))], HISTORY)
    assert got.ontology_version == 2 and got.classes == ["truck", "sedan", "coach"]
    assert [[b.label for b in i.boxes] for i in got.items] == [["truck"], ["coach"]]
