"""A real Label Studio server (the ``label-studio`` package, started by the test in its own venv
under ``/var/cache/leanloop-test/label-studio``; ``.ci/labelstudio`` installs it) and a real hub:
the hub's tasks are imported into a project with their pre-annotations, the project is
connected to the hub as its ML backend (basic auth with a named token) and asks it for
predictions, a person's annotation is made through Label Studio's API, and the project's JSON
export goes back into the hub, which stores it on the right sample."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
import urllib3
from loopkit import BundleMaker, painted_frame, publish

from hub.client import HubAdminClient
from hub.testing import LiveHub

pytestmark = pytest.mark.integration

LS_VENV = Path(
    os.environ.get("LEANLOOP_LABEL_STUDIO_VENV", "/var/cache/leanloop-test/label-studio")
)
TOKEN = "leanloop-test-0123456789abcdef"
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{i}"/>' for i in range(10))
    + "</RectangleLabels></View>"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = LS_VENV / "bin" / "label-studio"
    if not exe.exists():
        pytest.skip(f"Label Studio is not installed at {LS_VENV} (.ci/labelstudio installs it)")
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "false",
        "SSRF_PROTECTION_ENABLED": "false",  # the ML backend (our hub) is on loopback
        "USE_DEFAULT_BANNED_SUBNETS": "false",
    }
    log = open(data / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(exe), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
         "--username", "admin@example.com", "--password", "leanloop-test", "--user-token", TOKEN],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    http = urllib3.PoolManager()
    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.skip(f"Label Studio exited: {(data / 'server.log').read_text()[-500:]}")
            try:
                if http.request("GET", f"{url}/health", timeout=2).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.skip("Label Studio did not start within 240 s on this machine")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


class LS:
    def __init__(self, url: str) -> None:
        self.url, self.http = url, urllib3.PoolManager()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.http.request(
            method, self.url + path,
            body=None if body is None else json.dumps(body),
            headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
            timeout=60,
        )  # fmt: skip
        assert resp.status < 300, f"{method} {path}: {resp.status} {resp.data[:400]!r}"
        return json.loads(resp.data) if resp.data else None


def test_label_studio_when_pointed_at_the_hub_round_trips_tasks_predictions_and_annotations(
    label_studio: str, live_hub: LiveHub, admin: HubAdminClient, keys: Path,
    make_bundle: BundleMaker,
) -> None:  # fmt: skip
    publish(admin, keys, make_bundle(1, [(10, 10, 40, 40), (50, 50, 90, 90)]), 1)
    png = cv2.imencode(".png", painted_frame())[1].tobytes()
    # What a device of this bundle predicted on the frame (as its uploads carry it).
    seen = {"stages": {"detector": {"kind": "detection", "items": [
        {"box": [0, 0, 30, 30], "label": "1", "score": 0.9},
        {"box": [5, 5, 95, 95], "label": "2", "score": 0.8}]}}}  # fmt: skip
    sids = [
        admin.import_sample(
            {"id": f"ls-{i}", "bundle": "digits", "image_format": "png", "prediction": seen},
            png,
            [],
        )
        for i in range(2)
    ]
    # The hub's samples are annotated (imports carry an annotation); send them back to the
    # queue through the tasks export of every state.
    tasks = admin._json(
        "GET", "/admin/labelstudio/tasks", query={"bundle": "digits", "state": "all"}
    )
    assert {t["data"]["leanloop_id"] for t in tasks} == set(sids)
    token = admin._json("POST", "/admin/tokens", json_body={"name": "ls", "role": "annotator"})
    ls = LS(label_studio)
    project = ls.call("POST", "/api/projects", {"title": "leanloop digits", "label_config": CONFIG})
    pid = project["id"]
    ls.call("POST", f"/api/projects/{pid}/import", tasks)
    got = ls.call("GET", f"/api/tasks?project={pid}&fields=all")
    got_tasks = got["tasks"] if isinstance(got, dict) else got
    assert len(got_tasks) == 2
    for t in got_tasks:  # the hub's pre-annotations came along with the tasks
        imported = ls.call("GET", f"/api/predictions?task={t['id']}")
        assert [len(p["result"]) for p in imported] == [2], imported

    # The hub as this project's ML backend (Label Studio checks /health and /setup).
    backend = ls.call("POST", "/api/ml", {
        "url": f"{live_hub.url}/labelstudio/ml/digits/", "project": pid, "title": "leanloop hub",
        "auth_method": "BASIC_AUTH", "basic_auth_user": "labelstudio",
        "basic_auth_pass": token["token"],
    })  # fmt: skip
    assert backend["state"] in ("CO", "CONNECTED"), backend
    first = got_tasks[0]["id"]
    pred = (
        ls.call("POST", f"/api/ml/{backend['id']}/interactive-annotating", {"task": first})
        if False
        else None
    )
    del pred
    ls.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
            {"selectedItems": {"all": True, "excluded": []}})  # fmt: skip
    with_model = ls.call("GET", f"/api/predictions?task={first}")
    versions = {p.get("model_version") for p in with_model}
    assert "digits v1" in versions, with_model

    # A person annotates task 1 in Label Studio; the export goes back to the hub.
    region = {
        "type": "rectanglelabels", "from_name": "label", "to_name": "image",
        "original_width": 96, "original_height": 96, "image_rotation": 0,
        "value": {"x": 12.5, "y": 12.5, "width": 25.0, "height": 50.0, "rotation": 0,
                  "rectanglelabels": ["7"]},
    }  # fmt: skip
    ls.call("POST", f"/api/tasks/{first}/annotations", {"result": [region]})
    export = ls.call("GET", f"/api/projects/{pid}/export?exportType=JSON")
    answer = admin._json("POST", "/admin/labelstudio/import", json_body=export)
    assert answer["annotated"] == 1
    stored = {s["id"]: s for s in admin.samples("digits", state="annotated", limit=10)}
    task_sid = next(t["data"]["leanloop_id"] for t in got_tasks if t["id"] == first)
    assert stored[task_sid]["annotation"]["boxes"] == [[12.0, 12.0, 36.0, 60.0, "7"]]
    assert stored[task_sid]["annotation"]["annotator"].startswith("labelstudio:")
