"""The spec-driven trainer end to end on small real images: classify (scikit-learn digits),
detect (OpenCV shapes with known boxes), detect-then-classify; export with parity; the model
card; warm starts from a state dict and from ONNX; an Optuna search with pruning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from runtime.bundle.build import build_bundle
from trainer.datasets.model import DatasetError
from trainer.errors import TrainerError
from trainer.export_formats import tflite_unavailable_reason
from trainer.run import RunOutput, run_spec
from trainer.spec import SpecError, TrainingSpec, load_spec, parse_spec
from trainer.synthetic import SHAPES, digits_dataset, shapes_dataset

TINY = {"architecture": "mobilenet_v3_small", "width": 0.25}


def _spec(**kw: Any) -> TrainingSpec:
    return parse_spec({"threads": 1, "batch": 16, **kw})


def _classify(data: Path, **kw: Any) -> TrainingSpec:
    """A classify spec on the dataset at ``data`` with the tiny 32×32 network."""
    model = {**TINY, "input_size": [32, 32]}
    return _spec(task="classify", dataset={"path": str(data)}, model=model, **kw)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_dataset(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shapes_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def classified(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> RunOutput:
    formats = ["onnx", "openvino"] + ([] if tflite_unavailable_reason() else ["tflite"])
    spec = _classify(
        digits,
        epochs=20,
        lr=0.01,
        augment=[{"name": "Affine", "params": {"rotate": [-10, 10], "p": 0.5}}],
        class_weighting="sqrt_inverse_frequency",
        export=formats,
    )
    return run_spec(spec, tmp_path_factory.mktemp("cls") / "source")


def test_classify_when_trained_on_digits_writes_a_verified_source_with_a_card(
    classified: RunOutput, tmp_path: Path
) -> None:
    src = Path(classified["source"])
    card = json.loads((src / "model_card.json").read_text())
    assert card["data"]["dataset"] == "digits-small" and card["data"]["version"] == "7"
    counts = card["data"]["counts_per_class"]
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 90
    metrics = card["metrics"]["classifier"]
    assert metrics["overall"]["accuracy"] >= 0.8
    assert set(metrics["per_class"]) == {"0", "1", "7"}
    matrix = metrics["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == sum(counts["val"].values())
    parity = card["parity"]["max_abs_diff"]
    assert {"onnx.classifier", "openvino.classifier"} <= set(parity)
    if tflite_unavailable_reason() is None:
        assert "tflite.classifier" in parity
    assert all(v <= 1e-4 for v in parity.values())
    assert card["parameters"]["task"] == "classify" and card["time_s"]["train"] > 0
    assert "Confusion" in (src / "MODEL_CARD.md").read_text()
    assert yaml.safe_load((src / "ontology.yaml").read_text())["classes"] == ["0", "1", "7"]
    # The source is a real bundle source: the build runs the golden images through the pipeline.
    manifest = build_bundle(src, tmp_path / "bundle", "digits-cls", 1)
    assert manifest.models["classifier"].alternates.get("openvino") == "models/classifier.xml"
    assert manifest.health is not None and manifest.health.inputs


def test_detect_when_trained_on_shapes_finds_them_and_exports(shapes: Path, tmp_path: Path) -> None:
    spec = _spec(
        task="detect",
        dataset={"path": str(shapes)},
        model={**TINY, "input_size": [64, 64]},
        epochs=15,
        batch=8,
        lr=0.005,
        augment=[{"name": "HorizontalFlip", "params": {"p": 0.5}}],
        export=["onnx", "openvino"],
    )
    out = run_spec(spec, tmp_path / "source")
    card = out["card"]
    m = card["metrics"]["detector"]
    assert m["overall"]["recall"] > 0.2, m["overall"]
    assert m["confusion"]["labels"] == [*SHAPES, "background"]
    history = card["training"]["detector"]["history"]
    assert history[-1]["loss"] < history[0]["loss"] * 0.6
    assert all(v <= 1e-4 for v in card["parity"]["max_abs_diff"].values())
    pipeline = yaml.safe_load((tmp_path / "source" / "pipeline.yaml").read_text())
    assert pipeline["stages"][0]["post"]["type"] == "yolo_v8"
    build_bundle(tmp_path / "source", tmp_path / "bundle", "shapes", 1)


def test_detect_then_classify_when_trained_writes_two_stages(shapes: Path, tmp_path: Path) -> None:
    spec = _spec(
        task="detect_then_classify",
        dataset={"path": str(shapes)},
        model={**TINY, "input_size": [64, 64]},
        crop_model={**TINY, "input_size": [32, 32]},
        epochs=3,
        batch=8,
        export=["onnx"],
    )
    out = run_spec(spec, tmp_path / "source")
    stages = yaml.safe_load((tmp_path / "source" / "pipeline.yaml").read_text())["stages"]
    assert [s["name"] for s in stages] == ["detector", "classifier"]
    assert stages[1]["for_each"] == "detector"
    assert set(out["card"]["metrics"]) == {"detector", "classifier"}
    build_bundle(tmp_path / "source", tmp_path / "bundle", "shapes2", 1)

    # Warm start of both stages from the source's checkpoint (what a hub job's init_from does).
    ckpt = tmp_path / "source" / "checkpoint"
    warm_spec = spec.model_copy(
        update={"epochs": 1, "warm_start": ckpt / "detector.pt",
                "crop_warm_start": ckpt / "classifier.pt"}
    )  # fmt: skip
    card = run_spec(warm_spec, tmp_path / "warm")["card"]
    warm = json.loads(card["warm_start"])
    assert set(warm) == {"detector", "classifier"}
    assert warm["classifier"]["kept_fresh"] == [] and warm["classifier"]["copied"] > 0
    assert warm["detector"]["kept_fresh"] == []
    # The crop classifier starts where the first run ended, not from scratch.
    first = out["card"]["training"]["classifier"]["history"]
    assert card["training"]["classifier"]["history"][0]["loss"] < first[0]["loss"]
    with pytest.raises(SpecError, match="crop_warm_start is for task detect_then_classify"):
        _spec(task="classify", dataset={"path": str(shapes)}, crop_warm_start=str(ckpt))


@pytest.mark.parametrize(
    ("rel", "expect"),
    [
        ("checkpoint/classifier.pt", {"kind": "state_dict", "kept_fresh": []}),  # every tensor
        ("models/classifier.onnx", {"kind": "onnx"}),  # the converted graph is fine-tuned
    ],
    ids=["state_dict", "onnx"],
)
def test_warm_start_when_given_a_trained_classifier_starts_from_it(
    classified: RunOutput, digits: Path, tmp_path: Path, rel: str, expect: dict[str, Any]
) -> None:
    spec = _classify(
        digits, epochs=1, lr=1e-4, warm_start=str(Path(classified["source"]) / rel), export=["onnx"]
    )
    card = run_spec(spec, tmp_path / "source")["card"]
    warm = json.loads(card["warm_start"])
    assert {k: warm[k] for k in expect} == expect
    # Starting from a trained network, one gentle epoch keeps it accurate.
    assert card["metrics"]["classifier"]["overall"]["accuracy"] >= 0.8


def test_warm_start_when_onnx_has_an_unsupported_op_names_it(digits: Path, tmp_path: Path) -> None:
    node = helper.make_node("MyCustomOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "custom.onnx")
    spec = _classify(digits, epochs=1, warm_start=str(tmp_path / "custom.onnx"))
    with pytest.raises(TrainerError, match="MyCustomOp"):
        run_spec(spec, tmp_path / "source")
    assert not (tmp_path / "source").exists()


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_search_when_budget_is_four_trials_prunes_and_keeps_results(
    digits: Path, tmp_path: Path, pruner: str
) -> None:
    spec = _classify(
        digits,
        epochs=5,
        batch=8,
        export=["onnx"],
        search={
            "trials": 4,
            "pruner": pruner,
            "seed": 3,
            "space": {"lr": {"low": 1e-5, "high": 5e-2, "log": True}},
        },
    )
    card = run_spec(spec, tmp_path / "source")["card"]
    s = card["search"]
    assert s["trials_run"] == 4 and len(s["trials"]) == 4
    assert {t["state"] for t in s["trials"]} <= {"COMPLETE", "PRUNED"}
    # Trials that lag the others at the same epoch stop early (fewer epochs recorded).
    assert s["pruned"] >= 1
    pruned = [t for t in s["trials"] if t["state"] == "PRUNED"]
    assert all(len(t["intermediate"]) < 5 for t in pruned)
    assert s["best_value"] > 0.5
    assert card["parameters"]["lr"] == pytest.approx(s["best_params"]["lr"])
    assert card["time_s"]["search"] > 0


def test_spec_when_a_key_is_unknown_or_misspelt_fails_with_its_place(tmp_path: Path) -> None:
    bad = tmp_path / "spec.yaml"
    bad.write_text("task: classify\ndataset: {path: d}\nepoch: 3\n")
    with pytest.raises(SpecError, match="epoch"):
        load_spec(bad)
    with pytest.raises(SpecError, match="width applies to MobileNetV3 only"):
        parse_spec(
            {
                "task": "detect",
                "dataset": {"path": "d"},
                "model": {"architecture": "resnet18", "width": 0.5},
            }
        )
    with pytest.raises(SpecError, match="not an albumentations transform"):
        from trainer.engine import make_augment

        make_augment(
            parse_spec(
                {"task": "classify", "dataset": {"path": "d"}, "augment": [{"name": "NoSuchThing"}]}
            ).augment,
            False,
            0,
        )


@pytest.mark.parametrize("preset", ["digits", "shapes"])
def test_preset_when_loaded_is_a_valid_spec_with_its_augmentations(preset: str) -> None:
    from trainer.engine import make_augment

    spec = load_spec(Path(__file__).parents[2] / "trainer" / "presets" / f"{preset}.yaml")
    assert spec.name == preset
    assert make_augment(spec.augment, boxes=True, seed=0) is not None


def test_classify_when_dataset_is_folder_per_class_reads_it_through_trainer_datasets(
    tmp_path: Path,
) -> None:
    import cv2
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for c in (3, 8):
        (tmp_path / "set" / f"digit{c}").mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(bunch.target == c)[:12]):
            img = cv2.resize(np.clip(bunch.images[i] * 16, 0, 255).astype(np.uint8), (32, 32))
            cv2.imwrite(str(tmp_path / "set" / f"digit{c}" / f"{k}.png"), img)
    spec = _spec(
        task="classify",
        dataset={"path": str(tmp_path / "set"), "format": "folder"},
        model={**TINY, "input_size": [32, 32]},
        epochs=2,
        export=["onnx"],
    )
    card = run_spec(spec, tmp_path / "source")["card"]
    assert card["data"]["ontology"]["classes"] == ["digit3", "digit8"]
    assert card["data"]["version"].startswith("folder-")
    assert (
        sum(card["data"]["counts_per_class"]["train"].values())
        + sum(card["data"]["counts_per_class"]["val"].values())
        == 24
    )
    (tmp_path / "set" / "digit3" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"bad\.png"):
        run_spec(spec, tmp_path / "source2")


def test_warm_start_when_a_detector_is_given_an_exported_onnx_refuses_with_the_way_out(
    shapes: Path, tmp_path: Path
) -> None:
    base = {
        "task": "detect",
        "dataset": {"path": str(shapes)},
        "model": {**TINY, "input_size": [64, 64]},
        "epochs": 1,
        "batch": 8,
        "export": ["onnx"],
    }
    run_spec(_spec(**base), tmp_path / "first")
    spec = _spec(**base, warm_start=str(tmp_path / "first" / "models" / "detector.onnx"))
    # Refused either way: onnx2torch cannot read this export, or its tensors match no name.
    with pytest.raises(TrainerError, match=r"detector\.onnx: .*(state dict|checkpoint)"):
        run_spec(spec, tmp_path / "second")
    spec = _spec(**base, warm_start=str(tmp_path / "first" / "checkpoint" / "detector.pt"))
    card = run_spec(spec, tmp_path / "second")["card"]
    assert json.loads(card["warm_start"])["kept_fresh"] == []
