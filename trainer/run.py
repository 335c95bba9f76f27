"""Run a training spec end to end: dataset → (search) → train → export → bundle source + card.

:func:`run_spec` is what ``leanloop train`` and the hub's job queue both call (the hub through
``python -m trainer.run --spec FILE --out DIR``, which prints one JSON progress line per epoch
and writes ``progress.json`` beside the output for the job status).

The bundle source it writes::

    pipeline.yaml, ontology.yaml       the task's pipeline and the dataset's ontology
    models/<key>.onnx                  the reference export (dynamic batch), parity-checked
    models/<key>.xml/.bin, .tflite     OpenVINO IR and TFLite (batch 1), parity-checked
    golden/000.png …                   validation images for the install-time health check
    model_card.json, MODEL_CARD.md     data, counts, metrics, confusion, parameters, search,
                                       time, engine parity (see trainer.card)
    checkpoint/<key>.pt, spec.json     state dicts for the next warm start (not bundled)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from runtime.errors import LeanloopError
from runtime.pipeline.graph import PIPELINE_FORMAT, load_pipeline_spec
from trainer._folder import replaced_folder, write_golden
from trainer.card import build_card, write_card
from trainer.datasets.model import Dataset
from trainer.engine import EpochReport, select_device
from trainer.errors import TrainerError
from trainer.spec import SpecError, TrainingSpec, load_spec, load_spec_dataset
from trainer.tasks import TASKS
from trainer.tasks._common import OnEpoch, TaskResult

__all__ = ["RunOutput", "main", "run_spec", "train_once"]

SearchHook = Callable[[dict[str, Any]], None]


class RunOutput(dict[str, Any]):
    """``{"source": path, "card": model card dict}``."""


def _initial_model(spec: TrainingSpec, dataset: Dataset) -> tuple[Any, dict[str, Any] | None]:
    """The network to start from when ``spec.warm_start`` is given, and the report. For
    ``detect_then_classify``: a ``ModuleDict`` of the warm-started stages (``detector`` from
    ``warm_start``, ``classifier`` from ``crop_warm_start``) and a report per stage."""
    from trainer.arch import build_classifier, build_detector
    from trainer.warm import onnx_module, warm_start

    n = len(dataset.classes)
    if spec.task == "detect_then_classify":
        from trainer.tasks.detect_then_classify import DEFAULT_CROP_MODEL

        nets: dict[str, torch.nn.Module] = {}
        report: dict[str, Any] = {}
        if spec.warm_start is not None:
            nets["detector"] = build_detector(spec.model, 1)
            report["detector"] = dict(warm_start(nets["detector"], spec.warm_start))
        if spec.crop_warm_start is not None:
            nets["classifier"] = build_classifier(spec.crop_model or DEFAULT_CROP_MODEL, n)
            report["classifier"] = dict(warm_start(nets["classifier"], spec.crop_warm_start))
        return (torch.nn.ModuleDict(nets), report) if nets else (None, None)
    if spec.warm_start is None:
        return None, None
    if spec.task == "classify" and spec.warm_start.suffix.lower() == ".onnx":
        module = onnx_module(spec.warm_start)
        w, h = spec.model.input_size
        ch = 1 if spec.model.color == "gray" else 3
        with torch.no_grad():
            out = module.eval()(torch.zeros(1, ch, h, w))
        if tuple(out.shape) != (1, n):
            raise TrainerError(
                f"{spec.warm_start}: the ONNX model gives {tuple(out.shape)} for a {ch}×{h}×{w} "
                f"input; this dataset needs [1, {n}] class logits"
            )
        return module, {"source": str(spec.warm_start), "kind": "onnx", "whole_graph": True}
    if spec.task == "classify":
        model: torch.nn.Module = build_classifier(spec.model, n)
    else:
        model = build_detector(spec.model, n)
    return model, dict(warm_start(model, spec.warm_start))


def train_once(
    spec: TrainingSpec,
    dataset: Dataset,
    root: Path,
    on_epoch: OnEpoch | None = None,
) -> tuple[TaskResult, dict[str, Any] | None]:
    """One training run of ``spec`` (no search, no export)."""
    torch.set_num_threads(spec.threads)
    torch.manual_seed(spec.seed)
    device = select_device(spec.device)
    init, report = _initial_model(spec, dataset)
    task = TASKS[spec.task]
    return task(spec, dataset, root, device, init, on_epoch), report


def _pipeline_yaml(result: TaskResult) -> str:
    body = result.pipeline.model_dump(mode="json", exclude_defaults=True)
    text = "# written by the leanloop trainer (trainer/run.py)\n" + yaml.safe_dump(
        {"format": PIPELINE_FORMAT, "stages": body["stages"]}, sort_keys=False
    )
    if load_pipeline_spec(text) != result.pipeline:
        raise TrainerError("pipeline.yaml does not read back as the task's pipeline")
    return text


def _export(
    result: TaskResult, models: Path, formats: list[str]
) -> tuple[dict[str, float], dict[str, str]]:
    from trainer.export import export_onnx
    from trainer.export_formats import export_openvino, export_tflite, tflite_unavailable_reason

    diffs: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for key, net in result.nets.items():
        module = net.module.cpu().eval()
        onnx_path = models / f"{key}.onnx"
        diffs[f"onnx.{key}"] = export_onnx(
            module, onnx_path, net.input_name, net.output_name, net.sample_shape
        )
        if "openvino" in formats:
            diffs[f"openvino.{key}"] = export_openvino(
                module, onnx_path, models / f"{key}.xml", net.sample_shape
            )
        if "tflite" in formats:
            reason = tflite_unavailable_reason()
            if reason is not None:
                skipped["tflite"] = reason
            else:
                diffs[f"tflite.{key}"] = export_tflite(
                    module, models / f"{key}.tflite", net.sample_shape
                )
    return diffs, skipped


def write_source(
    out_dir: Path,
    spec: TrainingSpec,
    dataset: Dataset,
    result: TaskResult,
    seconds: dict[str, float],
    search: dict[str, Any] | None,
    warm: dict[str, Any] | None,
) -> dict[str, Any]:
    """Export and write the bundle source at ``out_dir`` (replaced atomically); return the card."""
    with replaced_folder(Path(out_dir)) as tmp:
        (tmp / "pipeline.yaml").write_text(_pipeline_yaml(result))
        onto = {
            "id": dataset.ontology_id,
            "version": dataset.ontology_version,
            "classes": list(dataset.classes),
        }
        (tmp / "ontology.yaml").write_text(yaml.safe_dump(onto, sort_keys=False))
        t0 = time.perf_counter()
        diffs, skipped = _export(result, tmp / "models", list(spec.export))
        seconds = {**seconds, "export": time.perf_counter() - t0}
        write_golden(tmp / "golden", result.golden)
        ck = tmp / "checkpoint"
        ck.mkdir()
        for key, net in result.nets.items():
            torch.save(net.module.state_dict(), ck / f"{key}.pt")
        (ck / "spec.json").write_text(spec.model_dump_json(indent=1))
        card = build_card(spec, dataset, result, diffs, skipped, seconds, search, _warm_text(warm))
        write_card(tmp, card)
    return card


def _warm_text(warm: dict[str, Any] | None) -> str | None:
    return json.dumps(warm, sort_keys=True) if warm else None


def run_spec(
    spec: TrainingSpec,
    out_dir: Path,
    on_epoch: OnEpoch | None = None,
    on_trial: SearchHook | None = None,
    dataset_at: tuple[Dataset, Path] | None = None,
) -> RunOutput:
    """Search (if the spec asks), train, export, and write the bundle source. ``dataset_at``
    is the spec's dataset already loaded (:func:`trainer.spec.load_spec_dataset`). Raises
    TrainerError (data, warm start, export) or SpecError."""
    t0 = time.perf_counter()
    dataset, root = dataset_at or load_spec_dataset(spec)
    dataset.check()
    seconds: dict[str, float] = {}
    search: dict[str, Any] | None = None
    if spec.search is not None:
        from trainer.search import run_search

        t1 = time.perf_counter()
        search, spec = run_search(spec, dataset, root, on_trial)
        seconds["search"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    result, warm = train_once(spec, dataset, root, on_epoch)
    seconds["train"] = time.perf_counter() - t2
    card = write_source(out_dir, spec, dataset, result, seconds, search, warm)
    card["time_s"]["total"] = time.perf_counter() - t0
    write_card(Path(out_dir), card)
    return RunOutput(source=str(out_dir), card=card)


def _progress_writer(path: Path | None) -> OnEpoch:
    def on_epoch(key: str, r: EpochReport) -> None:
        line = {
            "model": key,
            "epoch": r.epoch,
            "epochs": r.epochs,
            "loss": r.train_loss,
            "metric": r.metric,
            "confusion": r.details.get("confusion"),
        }
        print(json.dumps(line), flush=True)
        if path is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(line))
            tmp.replace(path)

    return on_epoch


def main(argv: list[str] | None = None) -> int:
    """``python -m trainer.run --spec SPEC --out DIR [--progress FILE]`` (the hub's runner)."""
    ap = argparse.ArgumentParser(prog="python -m trainer.run")
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--progress", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        out = run_spec(spec, args.out, _progress_writer(args.progress))
    except (LeanloopError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out['source']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
