"""trainer.job: the command the hub runs, end to end on a tiny labelled set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import yaml

from trainer.data import LAB_STYLE, Frame, Style
from trainer.job import main

MakeFrames = Callable[[str, Style, int, int], list[Frame]]
TINY = json.dumps(
    {
        "detector_steps": 4,
        "classifier_steps": 4,
        "warm_detector_steps": 2,
        "warm_classifier_steps": 2,
        "views_per_digit": 2,
        "synthetic_per_frame": 0.5,
        "formats": [],
    }
)


def _export(frames: list[Frame], folder: Path) -> tuple[Path, Path]:
    """What the hub's ``export_samples`` writes: annotations.jsonl and images/<id>.jpg."""
    images = folder / "images"
    images.mkdir(parents=True)
    lines = []
    for i, fr in enumerate(frames):
        cv2.imwrite(str(images / f"s{i:03d}.jpg"), fr.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        boxes = [[*b, str(lbl)] for b, lbl in zip(fr.boxes, fr.labels, strict=True)]
        lines.append(json.dumps({"id": f"s{i:03d}", "boxes": boxes}))
    lines.append(json.dumps({"id": "empty", "boxes": []}))  # a negative frame
    cv2.imwrite(str(images / "empty.jpg"), frames[0].image * 0 + 30)
    (folder / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "annotations.jsonl", images


def test_job_cli_when_run_on_a_tiny_set_writes_a_source_and_warm_starts(
    make_frames: MakeFrames, tmp_path: Path
) -> None:
    ann, images = _export(make_frames("seed", LAB_STYLE, 8, 31), tmp_path)
    first = tmp_path / "job1" / "source"
    cmd = [
        sys.executable,
        "-m",
        "trainer.job",
        "--annotations",
        str(ann),
        "--images",
        str(images),
        "--params",
        TINY,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # what the demo's hub passes on
    run = subprocess.run(
        [*cmd, "--out", str(first)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "loaded 9 frames" in run.stdout
    assert (first / "models" / "detector.onnx").is_file()
    assert (first / "checkpoint" / "detector.pt").is_file()

    second = tmp_path / "job2" / "source"
    code = main(
        [
            "--annotations",
            str(ann),
            "--images",
            str(images),
            "--params",
            TINY,
            "--out",
            str(second),
            "--init-from",
            str(first / "checkpoint"),
        ]
    )
    assert code == 0
    notes = json.loads((second / "notes.json").read_text())
    assert notes["train.warm_start"] == "1"
    assert notes["init_from"].endswith("checkpoint")
    assert not any(k.startswith("export_skipped.") for k in notes)  # ONNX only: none asked


def test_job_cli_when_formats_is_bad_exits_2(
    make_frames: MakeFrames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ann, images = _export(make_frames("seed", LAB_STYLE, 1, 34), tmp_path)
    for bad in ('{"formats": ["coreml"]}', '{"formats": "onnx"}', "[1]"):
        code = main(
            ["--annotations", str(ann), "--images", str(images), "--out", str(tmp_path / "o"),
             "--params", bad]
        )  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "s000", "boxes": [[1, 2, 30, 40, "seven"]]}', "not ontology classes"),
        ('{"id": "nope", "boxes": []}', "missing"),
        ('{"boxes": []}', "not an annotation line"),
        ('{"id": "s000", "boxes": [[30, 2, 1, 40, "7"]]}', "x2 <= x1"),
        ('{"id": "../s000", "boxes": []}', "not a plain file name"),
    ],
)
def test_job_cli_when_input_is_bad_exits_2_with_one_line(
    make_frames: MakeFrames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    message: str,
) -> None:
    ann, images = _export(make_frames("seed", LAB_STYLE, 1, 32), tmp_path)
    ann.write_text(line + "\n")
    code = main(
        ["--annotations", str(ann), "--images", str(images), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_job_cli_when_init_from_is_missing_exits_2(
    make_frames: MakeFrames, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ann, images = _export(make_frames("seed", LAB_STYLE, 1, 33), tmp_path)
    code = main(
        [
            "--annotations",
            str(ann),
            "--images",
            str(images),
            "--out",
            str(tmp_path / "out"),
            "--init-from",
            str(tmp_path / "nowhere"),
        ]
    )
    assert code == 2 and "no checkpoint" in capsys.readouterr().err


def test_job_cli_when_given_a_renamed_ontology_reads_its_labels_and_writes_it(
    make_frames: MakeFrames, tmp_path: Path
) -> None:
    ann, images = _export(make_frames("seed", LAB_STYLE, 4, 35), tmp_path)
    label = json.loads(ann.read_text().splitlines()[0])["boxes"][0][4]
    ann.write_text(ann.read_text().replace(f'"{label}"]', f'"digit-{label}"]'))  # hub remapped
    classes = [f"digit-{d}" if str(d) == label else str(d) for d in range(10)]
    onto = tmp_path / "ontology.json"
    onto.write_text(json.dumps({"id": "digits", "version": 2, "classes": classes}))
    args = ["--annotations", str(ann), "--images", str(images), "--params", TINY]
    assert main([*args, "--out", str(tmp_path / "src"), "--ontology", str(onto)]) == 0
    got = yaml.safe_load((tmp_path / "src" / "ontology.yaml").read_text())
    assert got == {"id": "digits", "version": 2, "classes": classes}
    # Without it the labels are not digits v1's: refused, as before.
    assert main([*args, "--out", str(tmp_path / "src2")]) == 2


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "digits", "version": 2, "classes": ["a", "b"]}',
        '{"id": "digits", "version": 2, "classes": ["0","0","2","3","4","5","6","7","8","9"]}',
        '{"id": "digits"}',
        "[",
    ],
)
def test_job_cli_when_the_ontology_file_is_bad_exits_2(
    make_frames: MakeFrames,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: str,
) -> None:
    ann, images = _export(make_frames("seed", LAB_STYLE, 1, 36), tmp_path)
    (tmp_path / "o.json").write_text(body)
    code = main(
        ["--annotations", str(ann), "--images", str(images), "--out", str(tmp_path / "out"),
         "--ontology", str(tmp_path / "o.json")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
