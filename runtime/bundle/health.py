"""The golden-input health check a bundle carries.

At build time the pipeline runs on the bundle's golden images and the outputs are written to
``golden/expected.json``. At install time the device loads the staged bundle, runs the same
images, and compares: same number of items per stage, same classes, scores within
``score_tolerance`` and boxes within ``box_tolerance`` pixels. A bundle that fails never
becomes active. This catches a model that loads but computes garbage on this device's engine.
"""

from __future__ import annotations

import json
from typing import Any

from runtime._limits import MAX_EXPECTED_BYTES, read_bounded
from runtime.bundle.loader import LoadedBundle, inside
from runtime.errors import BundleError
from runtime.pipeline.prediction import Prediction

__all__ = ["compare_predictions", "compute_expected", "run_health_check"]


def compute_expected(loaded: LoadedBundle, inputs: list[str]) -> dict[str, Any]:
    """Run the pipeline on each golden input (paths relative to the bundle)."""
    out: dict[str, Any] = {}
    for rel in inputs:
        data = inside(loaded.path, rel).read_bytes()
        pred = loaded.pipeline.run_bytes(data, frame_id=rel)
        if pred.error:
            raise BundleError(f"golden input {rel}: {pred.error}")
        d = pred.to_dict()
        for st in d["stages"].values():
            st.pop("latency_ms", None)
        out[rel] = d["stages"]
    return out


def compare_predictions(
    got: Prediction, want: dict[str, Any], score_tol: float, box_tol: float
) -> str | None:
    """Return None when ``got`` matches the expected stages, else a one-line difference."""
    if got.error:
        return f"frame failed: {got.error}"
    if set(got.stages) != set(want):
        return f"stages {sorted(got.stages)} != expected {sorted(want)}"
    for name, exp in want.items():
        items = got.stages[name].items
        if len(items) != len(exp["items"]):
            return f"stage {name}: {len(items)} items, expected {len(exp['items'])}"
        for i, (it, e) in enumerate(zip(items, exp["items"], strict=True)):
            if it.class_id != e["class_id"]:
                return f"stage {name} item {i}: class {it.label}, expected {e['label']}"
            if abs(it.score - e["score"]) > score_tol:
                return f"stage {name} item {i}: score {it.score:.5f}, expected {e['score']:.5f}"
            if it.box is not None and e.get("box") is not None:
                diff = max(abs(a - b) for a, b in zip(it.box, e["box"], strict=True))
                if diff > box_tol:
                    return f"stage {name} item {i}: box off by {diff:.2f} px"
    return None


def run_health_check(loaded: LoadedBundle) -> None:
    """Run the bundle's golden inputs. Raises BundleError with the first difference."""
    health = loaded.manifest.health
    if health is None:
        return
    try:
        expected = json.loads(
            read_bounded(inside(loaded.path, health.expected), MAX_EXPECTED_BYTES)
        )
    except (OSError, ValueError) as e:
        raise BundleError(f"health check: cannot read {health.expected}: {e}") from e
    if not isinstance(expected, dict):
        raise BundleError(f"health check: {health.expected} is not a JSON object")
    for rel in health.inputs:
        if rel not in expected:
            raise BundleError(f"health check: no expected output for {rel}")
        try:
            data = inside(loaded.path, rel).read_bytes()
        except OSError as e:
            raise BundleError(f"health check: cannot read {rel}: {e}") from e
        got = loaded.pipeline.run_bytes(data, frame_id=rel)
        diff = compare_predictions(got, expected[rel], health.score_tolerance, health.box_tolerance)
        if diff is not None:
            raise BundleError(f"health check failed on {rel}: {diff}")
