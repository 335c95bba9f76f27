"""Bundle build, offline verify, golden health check and the CLI around them, on real models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from loopkit import BOXES, BundleMaker, Loop, painted_frame
from typer.testing import CliRunner

from hub.signing import init_keys
from leanloop.cli import app
from runtime.bundle.health import run_health_check
from runtime.bundle.loader import file_sha256, load_bundle, verify_bundle_dir
from runtime.bundle.verify import verify_offline
from runtime.errors import BundleError, TrustError


def _rehash(bundle: Path, rel: str) -> None:
    m = json.loads((bundle / "manifest.json").read_text())
    p = bundle / rel
    m["files"][rel] = {"sha256": file_sha256(p), "size": p.stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_build_lists_every_file_and_records_golden_outputs_when_source_is_valid(
    make_bundle: BundleMaker,
) -> None:
    b = make_bundle(1, BOXES)
    m = verify_bundle_dir(b)
    assert {
        "pipeline.yaml",
        "ontology.yaml",
        "models/detector.onnx",
        "models/classifier.onnx",
        "golden/000.png",
        "golden/expected.json",
    } <= set(m.files)
    assert m.models["classifier"].inputs[0].shape[0] == "batch"
    loaded = load_bundle(b)
    try:
        run_health_check(loaded)
    finally:
        loaded.close()


def test_verify_names_the_file_when_one_byte_is_flipped(make_bundle: BundleMaker) -> None:
    b = make_bundle(1, BOXES)
    p = b / "models" / "detector.onnx"
    data = bytearray(p.read_bytes())
    data[100] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"models/detector\.onnx does not match"):
        verify_bundle_dir(b)


def test_health_check_fails_when_outputs_differ_from_golden(make_bundle: BundleMaker) -> None:
    b = make_bundle(1, BOXES)
    exp_path = b / "golden" / "expected.json"
    exp = json.loads(exp_path.read_text())
    item = exp["golden/000.png"]["classifier"]["items"][0]
    item["class_id"], item["label"] = (item["class_id"] + 1) % 10, "x"
    exp_path.write_text(json.dumps(exp))
    _rehash(b, "golden/expected.json")
    loaded = load_bundle(b)
    try:
        with pytest.raises(BundleError, match=r"health check failed on golden/000\.png"):
            run_health_check(loaded)
    finally:
        loaded.close()


def test_offline_verify_accepts_signed_bundle_and_rejects_wrong_root_when_keys_differ(
    loop: Loop, tmp_path: Path
) -> None:
    b, targets = loop.signed_bundle()
    keys = loop.keys
    assert verify_offline(b, keys / "root.json", targets).version == 1
    init_keys(tmp_path / "other")
    with pytest.raises(TrustError, match="signature does not verify"):
        verify_offline(b, tmp_path / "other" / "root.json", targets)
    (b / "pipeline.yaml").write_text((b / "pipeline.yaml").read_text() + "\n")
    _rehash(b, "pipeline.yaml")
    with pytest.raises(TrustError, match=r"manifest\.json: does not match its signed target"):
        verify_offline(b, keys / "root.json", targets)


def test_cli_verify_exits_1_with_one_line_when_bundle_is_tampered(loop: Loop) -> None:
    b, targets = loop.signed_bundle()
    argv = ["bundle", "verify", str(b), "--root", str(loop.keys / "root.json")]
    argv += ["--targets", str(targets)]
    runner = CliRunner()
    ok = runner.invoke(app, argv)
    assert ok.exit_code == 0, ok.output
    (b / "golden" / "000.png").write_bytes(b"not a png")
    bad = runner.invoke(app, argv)
    assert bad.exit_code == 1
    lines = [ln for ln in bad.output.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "golden/000.png" in lines[0]


def test_cli_infer_reports_bad_frames_and_keeps_going_when_images_are_mixed(
    make_bundle: BundleMaker,
    tmp_path: Path,
) -> None:
    b = make_bundle(1, BOXES)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), painted_frame())
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG truncated")
    missing = tmp_path / "missing.png"
    r = CliRunner().invoke(
        app, ["infer", "--bundle", str(b), "--json", str(corrupt), str(good), str(missing)]
    )
    assert r.exit_code == 2  # some input was bad; the good image still ran
    preds = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert preds[0]["error"] and "error" not in preds[1] and preds[2]["error"] == "no such file"
    assert [i["label"] for i in preds[1]["stages"]["classifier"]["items"]] == ["2", "7"]
    assert preds[1]["engines"] == {"detector": "onnxruntime", "classifier": "onnxruntime"}
    errors = r.stderr.splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") for e in errors), r.stderr
    assert str(corrupt) in errors[0] and f"{missing}: no such file" in errors[1]


def test_cli_infer_exits_2_with_one_error_line_when_the_only_image_is_bad(
    make_bundle: BundleMaker, tmp_path: Path
) -> None:
    b = make_bundle(1, BOXES)
    r = CliRunner().invoke(app, ["infer", "--bundle", str(b), str(tmp_path / "nope.png")])
    assert r.exit_code == 2
    assert r.stderr == f"error: {tmp_path / 'nope.png'}: no such file\n"
    assert r.stdout.startswith("engines: detector=onnxruntime, classifier=onnxruntime")


def test_cli_rejects_config_with_exit_2_when_a_key_is_unknown(tmp_path: Path) -> None:
    cfg = tmp_path / "d.yaml"
    cfg.write_text("device_id: x\nsourc: {}\n")
    r = CliRunner().invoke(app, ["device", "run", "--config", str(cfg)])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error: ") and "sourc" in r.output


def test_cli_build_names_the_missing_file_when_source_is_incomplete(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "pipeline.yaml").write_text("format: leanloop.pipeline/1\nstages: []\n")
    r = CliRunner().invoke(
        app, ["bundle", "build", str(src), "--out", str(tmp_path / "out"), "--name", "x"]
    )
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and r.output.startswith("error: ")
    assert "ontology.yaml: missing" in r.output
    assert not (tmp_path / "out").exists()  # nothing half-built is left


def test_build_leaves_a_non_empty_out_untouched_when_it_refuses(
    make_bundle: BundleMaker, tmp_path: Path
) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    src = make_bundle(1, BOXES)  # any folder; build must refuse before reading it
    from runtime.bundle.build import build_bundle

    with pytest.raises(BundleError, match="exists and is not empty"):
        build_bundle(src, out, name="digits", version=1)
    assert (out / "keep.txt").read_text() == "mine"
