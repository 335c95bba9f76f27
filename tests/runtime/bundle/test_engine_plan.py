"""Which engine runs which model: the plan from the device's preference, the stages' pins and
the files a bundle has (pure: engine availability is passed in)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.bundle.engines import plan_engines, preference, stage_pins
from runtime.bundle.loader import unneeded_files
from runtime.bundle.manifest import FileEntry, Manifest, ModelEntry, Ontology
from runtime.errors import BackendError, BundleError, PipelineError
from runtime.pipeline.graph import parse_pipeline_spec

FORMAT_OF = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}


def _manifest(**models: Any) -> Manifest:
    """``key=[file, ...]`` (first is the primary), or ``key=([files], engine_pin)``."""
    entries: dict[str, ModelEntry] = {}
    files: dict[str, FileEntry] = {"pipeline.yaml": FileEntry(sha256="0" * 64, size=1)}
    for key, spec in models.items():
        paths, pin = spec if isinstance(spec, tuple) else (spec, None)
        fmt = {p: FORMAT_OF["." + p.rsplit(".", 1)[1]] for p in paths}
        entries[key] = ModelEntry(
            path=paths[0],
            format=fmt[paths[0]],
            alternates={fmt[p]: p for p in paths[1:]},
            engine=pin,
        )
        for p in paths:
            files[p] = FileEntry(sha256="0" * 64, size=1)
            if p.endswith(".xml"):
                files[p[:-4] + ".bin"] = FileEntry(sha256="0" * 64, size=1)
    return Manifest(
        name="b",
        version=1,
        created="2026-01-01T00:00:00Z",
        ontology=Ontology(id="o", version=1, classes=["a"]),
        models=entries,
        files=files,
    )


def _installed(*engines: str) -> Any:
    return lambda e: None if e in engines else f"{e} is not installed"


def _engines(plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {k: (c.engine, c.path) for k, c in plan.items()}


def test_each_model_runs_on_the_first_preferred_engine_that_has_a_file_for_it() -> None:
    m = _manifest(det=["det.tflite"], cls=["cls.onnx"])
    every = _installed("onnxruntime", "openvino", "litert")
    assert _engines(plan_engines(m, ["onnxruntime", "litert"], unavailable=every)) == {
        "det": ("litert", "det.tflite"),
        "cls": ("onnxruntime", "cls.onnx"),
    }
    # One name, or a comma-separated string, is a preference too.
    assert _engines(plan_engines(m, "litert,onnxruntime", unavailable=every))["cls"] == (
        "onnxruntime",
        "cls.onnx",
    )


def test_openvino_reads_onnx_and_tflite_directly_when_the_bundle_has_no_ir() -> None:
    m = _manifest(det=["det.tflite"], cls=["cls.onnx"], ir=["ir.onnx", "ir.xml"])
    plan = plan_engines(m, ["openvino"], unavailable=_installed("openvino"))
    assert _engines(plan) == {
        "det": ("openvino", "det.tflite"),
        "cls": ("openvino", "cls.onnx"),
        "ir": ("openvino", "ir.xml"),  # its own format first
    }


def test_a_missing_engine_is_skipped_when_a_later_preferred_one_is_installed() -> None:
    m = _manifest(cls=["cls.onnx", "cls.tflite"])
    plan = plan_engines(m, ["onnxruntime", "litert"], unavailable=_installed("litert"))
    assert _engines(plan) == {"cls": ("litert", "cls.tflite")}


def test_plan_names_each_engine_s_reason_when_no_preferred_engine_can_run_a_model() -> None:
    m = _manifest(det=["det.tflite"])
    with pytest.raises(BundleError) as e:
        plan_engines(m, ["onnxruntime", "litert"], unavailable=_installed("onnxruntime"))
    assert str(e.value) == (
        "model 'det' (tflite) cannot run on any preferred engine: onnxruntime: no onnx file; "
        "litert: litert is not installed"
    )


def test_a_pin_wins_over_the_preference_and_fails_loudly_when_it_cannot_be_honoured() -> None:
    every = _installed("onnxruntime", "openvino", "litert")
    m = _manifest(cls=(["cls.onnx", "cls.tflite"], "litert"))
    assert _engines(plan_engines(m, ["onnxruntime"], unavailable=every)) == {
        "cls": ("litert", "cls.tflite")
    }
    # Pins from the pipeline's stages add to (and override) the manifest's.
    plan = plan_engines(m, ["onnxruntime"], {"cls": "openvino"}, unavailable=every)
    assert _engines(plan) == {"cls": ("openvino", "cls.onnx")}
    with pytest.raises(BundleError, match="pinned to litert, which cannot run here: litert is not"):
        plan_engines(m, ["onnxruntime"], unavailable=_installed("onnxruntime"))
    m2 = _manifest(cls=(["cls.tflite"], "onnxruntime"))
    with pytest.raises(BundleError, match=r"pinned to onnxruntime but has no file it reads"):
        plan_engines(m2, ["litert"], unavailable=every)


def test_preference_is_refused_when_it_names_an_unknown_engine_or_none() -> None:
    assert preference("openvino, litert") == ("openvino", "litert")
    with pytest.raises(BackendError, match="unknown engine 'onnxruntme'"):
        preference(["onnxruntme"])
    with pytest.raises(BackendError, match="no inference engine"):
        preference("")


def test_stage_pins_are_refused_when_two_stages_pin_one_model_to_different_engines() -> None:
    def stage(name: str, engine: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": "m",
            "engine": engine,
            "pre": {"resize": [8, 8]},
            "post": {"type": "softmax"},
        }

    ok = parse_pipeline_spec({"stages": [stage("a", "litert"), stage("b", "litert")]})
    assert stage_pins(ok) == {"m": "litert"}
    bad = parse_pipeline_spec({"stages": [stage("a", "litert"), stage("b", "openvino")]})
    with pytest.raises(PipelineError, match="pins model 'm' to openvino, another stage"):
        stage_pins(bad)


def test_fetch_skips_only_the_files_no_planned_engine_reads() -> None:
    m = _manifest(det=["det.onnx", "det.tflite"], cls=["cls.onnx", "cls.xml", "cls.tflite"])
    # Every engine is installed in the test environment (the device extras).
    assert unneeded_files(m, ["openvino"]) == {"det.tflite", "cls.onnx", "cls.tflite"}
    assert unneeded_files(m, ["litert", "onnxruntime"]) == {
        "det.onnx",
        "cls.onnx",
        "cls.xml",
        "cls.bin",
    }
    assert unneeded_files(m, "onnxruntime") == {"det.tflite", "cls.xml", "cls.bin", "cls.tflite"}
    # A model no engine can run: nothing is skipped, the load says why.
    assert unneeded_files(_manifest(det=["det.tflite"]), ["onnxruntime"]) == set()
