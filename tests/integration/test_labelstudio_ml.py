"""The hub as a Label Studio ML backend with a real published bundle: ``/predict`` runs the
device pipeline (real ONNX models from the integration kit) on a stored sample and answers
Label Studio's prediction shape."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cv2
import pytest
import urllib3
from loopkit import BundleMaker, painted_frame, publish

from hub.client import HubAdminClient
from hub.testing import LiveHub

pytestmark = pytest.mark.integration


def test_predict_when_a_bundle_is_published_gives_its_boxes_as_pre_annotations(
    live_hub: LiveHub, admin: HubAdminClient, keys: Path, make_bundle: BundleMaker
) -> None:
    publish(admin, keys, make_bundle(1, [(10, 10, 40, 40), (50, 50, 90, 90)]), 1)
    png = cv2.imencode(".png", painted_frame())[1].tobytes()
    sid = admin.import_sample({"id": "ls-1", "bundle": "digits", "image_format": "png"}, png, [])
    token = admin._json("POST", "/admin/tokens", json_body={"name": "ls", "role": "annotator"})
    auth = base64.b64encode(f"labelstudio:{token['token']}".encode()).decode()
    http = urllib3.PoolManager()
    resp = http.request(
        "POST", f"{live_hub.url}/labelstudio/ml/digits/predict",
        body=json.dumps({"tasks": [{"id": 1, "data": {"image": "x", "leanloop_id": sid}}]}),
        headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert resp.status == 200, resp.data[:300]
    (pred,) = json.loads(resp.data)["results"]
    assert pred["model_version"] == "digits v1"
    regions = pred["result"]
    assert len(regions) == 2
    # The kit's constant detector says boxes (cx, cy, w, h) = (10, 10, 40, 40) and (50, 50, 90, 90):
    # (0, 0, 30, 30) after clipping and (5, 5, 95, 95); its classifier reads them as 1 and 2.
    got = sorted(
        (
            tuple(round(r["value"][k] / 100 * 96) for k in ("x", "y", "width", "height")),
            r["value"]["rectanglelabels"][0],
        )
        for r in regions
    )
    assert got == [((0, 0, 30, 30), "1"), ((5, 5, 90, 90), "2")]
    assert all(r["type"] == "rectanglelabels" and r["original_width"] == 96 for r in regions)
    assert 0.9 <= pred["score"] <= 1.0
