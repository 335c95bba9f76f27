"""``leanloop train`` as a user runs it: a real process, a spec file, a dataset folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from trainer.synthetic import shapes_dataset

SPEC = """\
name: shapes
task: detect
dataset: {path: shapes}
model: {architecture: mobilenet_v3_small, width: 0.25, input_size: [64, 64]}
epochs: 2
batch: 8
threads: 1
export: [onnx]
"""


# rich's own switches: draw as on a terminal although stderr is a pipe.
TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160"}


def _train(cwd: Path, *args: str, terminal: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leanloop.cli", "train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(TERMINAL if terminal else {})},
    )


def test_cli_train_when_spec_is_good_writes_source_and_prints_card(tmp_path: Path) -> None:
    shapes_dataset(tmp_path / "shapes", n=16)
    (tmp_path / "spec.yaml").write_text(SPEC)
    run = _train(tmp_path, "spec.yaml", "--json", "--out", "src", terminal=True)
    assert run.returncode == 0, run.stderr
    assert "train detector" not in run.stderr  # no bar with --json, even at a terminal
    out = json.loads(run.stdout)
    assert out["card"]["task"] == "detect"
    assert (tmp_path / "src" / "models" / "detector.onnx").is_file()
    assert (tmp_path / "src" / "MODEL_CARD.md").is_file()


def test_cli_train_when_spec_or_dataset_is_bad_says_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(SPEC + "epoch: 3\n")
    run = _train(tmp_path, "spec.yaml")
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and run.stderr.count("\n") == 1
    assert "epoch" in run.stderr
    (tmp_path / "spec.yaml").write_text(SPEC)
    run = _train(tmp_path, "spec.yaml")
    assert run.returncode == 2 and "shapes: no dataset here" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_cli_train_when_stderr_is_a_terminal_draws_a_bar_to_100_percent_on_stderr(
    tmp_path: Path,
) -> None:
    shapes_dataset(tmp_path / "shapes", n=16)
    (tmp_path / "spec.yaml").write_text(SPEC.replace("epochs: 2", "epochs: 1"))
    run = _train(tmp_path, "spec.yaml", "--out", "src", terminal=True)
    assert run.returncode == 0, run.stderr
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", run.stderr)
    last = [ln for ln in plain.splitlines() if "train detector" in ln][-1]  # the final drawing
    assert "1/1" in last and "1/1" in last and "100%" in last, run.stderr
    assert "train detector" not in run.stdout and "wrote" in run.stdout  # stdout: the result
