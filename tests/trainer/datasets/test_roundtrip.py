"""Round-trips of every format: write → read gives the dataset back; read → write → read is
identical (Hypothesis draws the datasets: class names, sizes, boxes on thousandths of a pixel)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.trainer.datasets.dsgen import dataset_specs, materialise
from trainer.datasets import read_dataset, write_dataset
from trainer.datasets.model import Dataset

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CASES = [
    ("coco", "detection"),
    ("coco", "classification"),
    ("yolo", "detection"),
    ("labelstudio", "detection"),
    ("labelstudio", "classification"),
    ("folder", "classification"),
    ("native", "classification"),
    ("native", "detection"),
]
KEEPS_ONTOLOGY = {"coco", "yolo", "labelstudio", "native"}


def _roundtrip(fmt: str, ds: Dataset) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        original = materialise(ds, t / "src")
        write_dataset(fmt, original, t / "one")
        first = read_dataset(fmt, t / "one")
        assert first.content() == original.content()
        if fmt in KEEPS_ONTOLOGY:
            assert (first.ontology_id, first.ontology_version) == ("things", ds.ontology_version)
        write_dataset(fmt, first, t / "two")
        second = read_dataset(fmt, t / "two")
        assert second.content() == first.content()
        assert second.counts() == original.counts()


@pytest.mark.parametrize(("fmt", "task"), CASES)
def test_roundtrip_when_written_and_read_back(fmt: str, task: str) -> None:
    @SETTINGS
    @given(ds=dataset_specs(task))
    def check(ds: Dataset) -> None:
        _roundtrip(fmt, ds)

    check()


@given(ds=dataset_specs("detection"), to=st.sampled_from(["coco", "labelstudio"]))
@SETTINGS
def test_detection_converts_between_formats_when_yolo_is_the_source(ds: Dataset, to: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_dataset("yolo", materialise(ds, t / "src"), t / "yolo")
        from_yolo = read_dataset("yolo", t / "yolo")
        write_dataset(to, from_yolo, t / to)
        assert read_dataset(to, t / to).content() == ds.content()
