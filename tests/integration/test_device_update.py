"""A real device process against a real hub: install a signed bundle, serve, upload; refuse
tampered files and bad signatures with a one-line reason while serving the bundle it has."""

from __future__ import annotations

import json

from loopkit import BOXES, BOXES_NEW, Device, Loop, committed, delta_targets, flip_blob_byte

from runtime.bundle.loader import read_manifest


def _assert_refused_and_serving_v1(dev: Device, reason: str) -> None:
    """The device reports a one-line refusal naming ``reason`` and keeps serving v1."""
    st = dev.wait("refusal", lambda st: bool(st.get("last_update_error")))
    err = st["last_update_error"]
    assert "\n" not in err and reason in err, err
    assert st["active"]["version"] == 1
    before = st["counters"]["frames"]
    names = dev.feed(3)
    dev.wait("frames after refusal", lambda st: st["counters"]["frames"] >= before + 3)
    assert all(dev.results()[n]["bundle_version"] == 1 for n in names)


def test_device_installs_serves_and_uploads_when_bundle_is_signed(loop: Loop) -> None:
    dev = loop.serving_device()
    names = dev.feed(6)
    dev.wait("frames processed", lambda st: st["counters"]["frames"] >= 6)
    res = dev.results()
    pred = res[names[0]]
    assert pred["bundle_version"] == 1
    labels = [it["label"] for it in pred["stages"]["classifier"]["items"]]
    assert labels == ["2", "7"]  # brightness 60 -> 2, 200 -> 7
    dev.wait("trial committed", lambda st: st["active"]["status"] == "committed")
    dev.wait("samples uploaded", lambda st: st["counters"]["uploaded"] >= 1)
    assert loop.admin.samples("digits", state="pending", limit=50)


def test_device_refuses_tampered_file_and_keeps_serving_when_hub_blob_is_altered(
    loop: Loop,
) -> None:
    dev = loop.serving_device()
    v2 = loop.make_bundle(2, BOXES_NEW)
    loop.admin.publish_bundle(v2, loop.keys)
    sha = read_manifest(v2).files["models/detector.onnx"].sha256
    flip_blob_byte(loop.hub, sha)
    # The delta from v1 is corrupted too, so the device falls back to the (bad) full file.
    deltas = delta_targets(loop.admin, "digits/2/models/detector.onnx")
    assert deltas
    for info in deltas.values():
        flip_blob_byte(loop.hub, info["hashes"]["sha256"])
    loop.admin.rollout("digits", 2)
    _assert_refused_and_serving_v1(dev, "digits v2 refused")
    slots = json.loads((dev.state / "slots.json").read_text())
    assert all(s["status"] != "staging" for s in slots["slots"].values())


def test_device_refuses_metadata_and_keeps_serving_when_signature_is_bad(loop: Loop) -> None:
    dev = loop.serving_device()
    loop.admin.publish_bundle(loop.make_bundle(2, BOXES_NEW), loop.keys)
    ts = loop.hub.config.data_dir / "tuf" / "timestamp.json"
    md = json.loads(ts.read_text())
    sig = md["signatures"][0]["sig"]
    md["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    ts.write_text(json.dumps(md))
    loop.admin.rollout("digits", 2)
    _assert_refused_and_serving_v1(dev, "signed metadata rejected")


def test_device_updates_and_reuses_unchanged_files_when_v2_is_signed(loop: Loop) -> None:
    dev = loop.serving_device()
    first = dev.status()["counters"]["bytes_downloaded"]
    v2 = loop.publish(2, BOXES_NEW)
    dev.feed(4)
    st = dev.wait("v2 committed", committed(2))
    clf = read_manifest(v2).files["models/classifier.onnx"].size
    # The classifier is byte-identical between v1 and v2: it is copied from the active slot.
    assert (
        st["counters"]["bytes_downloaded"] - first
        < sum(f.size for f in read_manifest(v2).files.values()) - clf + 20000
    )
    assert st["previous"]["version"] == 1


def test_device_skips_model_files_of_other_engines_when_bundle_carries_several_formats(
    loop: Loop,
) -> None:
    tflite = b"TFL3" + bytes(300_000)  # an alternate format this ONNX Runtime device never reads
    b = loop.make_bundle(1, BOXES, extra={"models/detector.tflite": tflite})
    assert read_manifest(b).models["detector"].alternates == {"tflite": "models/detector.tflite"}
    dev = loop.serving_device(bundle=b)
    st = dev.status()
    assert st["counters"]["bytes_downloaded"] < 300_000
    slot = dev.state / "slots" / st["active"]["slot"]
    assert not (slot / "models" / "detector.tflite").exists()
    assert json.loads((slot / ".skipped.json").read_text()) == ["models/detector.tflite"]
