"""Bad annotations: one DatasetError listing every problem with its place, per format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.datasets.dsgen import write_png
from trainer.datasets import DatasetError, read_dataset


def _problems(fmt: str, path: Path) -> list[str]:
    with pytest.raises(DatasetError) as info:
        read_dataset(fmt, path)
    assert "nothing imported" in str(info.value)
    return [str(p) for p in info.value.problems]


def test_coco_reports_every_problem_when_annotations_are_bad(tmp_path: Path) -> None:
    write_png(tmp_path / "images" / "a.png", 20, 10)
    write_png(tmp_path / "images" / "b.png", 20, 10)
    (tmp_path / "images" / "bad.png").write_bytes(b"not a png at all")
    doc = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 20, "height": 10},
            {"id": 1, "file_name": "b.png", "width": 20, "height": 10},
            {"id": 2, "file_name": "gone.png", "width": 5, "height": 5},
            {"id": 3, "file_name": "bad.png", "width": 5, "height": 5},
            {"id": 4, "file_name": "b.png", "width": 30, "height": 10},
        ],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [15, 2, 10, 4]},
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 2, 2]},
            {"id": 3, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": "wide"},
        ],
    }
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    problems = _problems("coco", tmp_path)
    expected = [
        "annotations.json#images[1]: image id 1 is used twice",
        "annotations.json#annotation 1: annotation id 1 is used twice",
        "annotations.json#annotation 2: unknown category 7",
        "annotations.json#annotation 3: image_id 99 names no image",
        "annotations.json#annotation 4: bbox must be [x, y, width, height], got 'wide'",
        "annotations.json#image 2: image 'gone.png' is missing",
        "annotations.json#image 3: image 'bad.png': image does not decode",
        "annotations.json#image 4: image 'b.png' is 20x10, the annotations say 30x10",
        "a.png box 0: box [15.0, 2.0, 25.0, 6.0] is outside the 20x10 image",
    ]
    assert len(problems) == len(expected), problems
    for got, want in zip(problems, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_yolo_reports_every_problem_when_labels_are_bad(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    write_png(tmp_path / "images" / "a.png", 10, 10)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\n0 0.95 0.5 0.2 0.2\nhello\n1 x y z w\n"
    )
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    problems = _problems("yolo", tmp_path)
    assert problems == [
        "labels/a.txt:2: unknown category index 5 (there are 2 classes)",
        "labels/a.txt:4: expected 'class cx cy w h', got 'hello'",
        "labels/a.txt:5: not numbers: '1 x y z w'",
        "labels/orphan.txt: label file with no image",
        "a.png box 1: box [8.5, 4.0, 10.5, 6.0] is outside the 10x10 image",
    ]


def test_labelstudio_reports_every_problem_when_tasks_are_bad(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 10, 20)
    (tmp_path / "classes.txt").write_text("cat\n")

    def rect(x: float, label: str, rotation: float = 0) -> dict[str, object]:
        value = {"x": x, "y": 10, "width": 20, "height": 10, "rotation": rotation}
        return {"type": "rectanglelabels", "value": {**value, "rectanglelabels": [label]}}

    tasks = [
        {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "annotations": [
            {"result": [rect(10, "cat"), rect(95, "cat"), rect(10, "cow"), rect(5, "cat", 30)]}
        ]},
        {"id": 1, "data": {"image": "a.png"}, "annotations": []},
        {"id": 2, "data": {"image": "http://x/missing.jpg"}, "annotations": []},
    ]  # fmt: skip
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    problems = _problems("labelstudio", tmp_path)
    assert problems == [
        "tasks.json#task 1: task id 1 is used twice",
        "tasks.json#task 1 result 3: rotated rectangles are not supported (30°)",
        "tasks.json#task 2: image 'missing.jpg' is missing",
        "a.png box 1: box [9.5, 2.0, 11.5, 4.0] is outside the 10x20 image",
        "a.png box 2: unknown class 'cow'",
        "a.png: the same image is listed twice",
    ]


def test_folder_reports_every_problem_when_files_are_bad(tmp_path: Path) -> None:
    write_png(tmp_path / "cat" / "1.png", 8, 8)
    (tmp_path / "cat" / "2.png").write_bytes(b"")
    (tmp_path / "cat" / "notes.txt").write_text("hi")
    write_png(tmp_path / "cow" / "1.png", 8, 8)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "stray.png").write_bytes(b"x")
    problems = _problems("folder", tmp_path)
    assert problems == [
        "cow/: folder 'cow' is not a class listed in classes.txt",
        "cat/2.png: image 'cat/2.png': image does not decode (corrupt or not an image)",
        "cat/notes.txt: not an image file (by its suffix)",
        "stray.png: a file outside any class folder",
        "cow/1.png: unknown class 'cow'",
    ]


def test_read_fails_with_one_line_when_the_format_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset format 'voc'; choose one of coco"):
        read_dataset("voc", tmp_path)


def test_write_refuses_when_the_format_cannot_hold_the_task(tmp_path: Path) -> None:
    write_png(tmp_path / "src" / "cat" / "1.png", 8, 8)
    ds = read_dataset("folder", tmp_path / "src")
    with pytest.raises(DatasetError, match="yolo: YOLO txt holds boxes"):
        from trainer.datasets import write_dataset

        write_dataset("yolo", ds, tmp_path / "out")
