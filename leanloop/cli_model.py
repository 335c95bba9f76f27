"""``leanloop model import``: an existing model file → a bundle source (see
:mod:`trainer.model_import`; what cannot be guessed ends in one ``error:`` line naming the
option to add, exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from leanloop._cli_common import handled
from runtime.console import JsonFlag
from runtime.errors import ConfigError

__all__ = ["model_app"]

model_app = typer.Typer(help="Bring existing models into leanloop.", no_args_is_help=True)


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise ConfigError(f"--input-size {text!r}: write WIDTHxHEIGHT, e.g. 640x640")
    return int(w), int(h)


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"--{what} {text!r}: write comma-separated numbers") from None


@model_app.command("import")
@handled
def model_import(
    files: Annotated[
        list[Path], typer.Argument(help="model file(s): .onnx, .tflite, OpenVINO .xml + .bin")
    ],
    task: Annotated[str, typer.Option(help="classification | detection")],
    labels: Annotated[
        list[str], typer.Option(help="class names in output order: repeat, a,b,c, or a file")
    ],
    out: Annotated[Path, typer.Option(help="bundle source folder to write (must not exist)")],
    ontology: Annotated[str, typer.Option(help="ontology id")] = "imported",
    decoder: Annotated[
        str | None,
        typer.Option(
            help="yolo_v8 | yolo_v5 | ssd | softmax | sigmoid | identity (default: guess)"
        ),
    ] = None,
    input_size: Annotated[str | None, typer.Option(help="WxH for a dynamic input")] = None,
    color: Annotated[str | None, typer.Option(help="rgb | bgr | gray (default: rgb)")] = None,
    scale: Annotated[float | None, typer.Option(help="pixel scale (float default 1/255)")] = None,
    mean: Annotated[str | None, typer.Option(help="per-channel mean after scale: a,b,c")] = None,
    std: Annotated[str | None, typer.Option(help="per-channel std after scale: a,b,c")] = None,
    anchors: Annotated[Path | None, typer.Option(help="SSD anchors YAML")] = None,
    score_threshold: Annotated[float, typer.Option(help="detections below are dropped")] = 0.25,
    golden: Annotated[
        list[Path] | None, typer.Option(help="images for the health check (default: synthetic)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write pipeline.yaml, ontology.yaml, models/ and golden/ for `leanloop bundle build`."""
    from trainer.model_import import ImportOptions, import_model

    opts = ImportOptions(
        task=task,
        labels=list(labels),
        ontology_id=ontology,
        decoder=decoder,
        input_size=_size(input_size),
        color=color,
        scale=scale,
        mean=_floats(mean, "mean"),
        std=_floats(std, "std"),
        anchors=anchors,
        score_threshold=score_threshold,
        golden=list(golden or []),
    )
    got = import_model(list(files), opts, out)
    if as_json:
        typer.echo(json.dumps(got, indent=2))
    else:
        typer.echo(f"wrote {out}: {task} with {got['post']['type']} outputs, input {got['pre']}")
