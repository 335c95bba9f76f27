"""Hub-side ranking with real device processes: four devices (each its own process, its own
LMDB store and the device uploader's resumable parts) send overlapping views of real photos
to a real hub on loopback. The queue shows one entry per near-duplicate group, an annotation
reaches every copy (and a copy that arrives later), and novel scenes rank above repeats even
when the repeats score higher on their device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from scenes import copy_of, jpeg, look_alike, scene

from hub.client import HubAdminClient
from hub.testing import LiveHub

DEVICE = Path(__file__).with_name("rank_device.py")
ROOT = Path(__file__).parents[2]


def run_devices(
    hub: LiveHub, tmp_path: Path, plan: dict[str, list[tuple[str, bytes, float]]]
) -> dict[str, str]:
    """Start one process per device at once; return {job name: sample id}."""
    procs = []
    for device, jobs in plan.items():
        folder = tmp_path / device
        folder.mkdir()
        listed = []
        for name, image, priority in jobs:
            (folder / f"{name}.jpg").write_bytes(image)
            listed.append({"name": name, "image": str(folder / f"{name}.jpg"),
                           "priority": priority, "label": "scene"})  # fmt: skip
        (folder / "jobs.json").write_text(json.dumps(listed))
        args = [sys.executable, str(DEVICE), hub.url, hub.enroll_token, device, str(folder),
                str(folder / "jobs.json")]  # fmt: skip
        procs.append(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    ids: dict[str, str] = {}
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
        ids.update(json.loads(out.strip().splitlines()[-1]))
    return ids


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in rows}


def test_queue_when_devices_send_overlapping_scenes_groups_copies_and_ranks_novel_first(
    live_hub: LiveHub, tmp_path: Path
) -> None:
    admin = HubAdminClient(live_hub.url, live_hub.admin_token)
    seed_boxes = [[10.0, 20.0, 110.0, 220.0, "scene"]]
    seed = admin.import_sample({"bundle": "scenes"}, jpeg(scene(12)), seed_boxes)  # type: ignore[arg-type]
    confusing, moved, other = scene(3), scene(4), scene(14)
    ids = run_devices(live_hub, tmp_path, {
        "cam-1": [("conf-1", jpeg(confusing), 0.90), ("alike-3", look_alike(confusing), 0.95),
                  ("novel-6", jpeg(scene(6)), 0.50)],
        "cam-2": [("conf-2", copy_of(confusing, "q50"), 0.92), ("alike-4", look_alike(moved), 0.70),
                  ("novel-8", jpeg(scene(8)), 0.50)],
        "cam-3": [("conf-3", copy_of(confusing, "bright"), 0.88), ("scene-4", jpeg(moved), 0.60),
                  ("novel-11", jpeg(scene(11)), 0.50)],
        "cam-4": [("conf-4", copy_of(confusing, "half"), 0.91), ("seed-copy", copy_of(scene(12),
                  "half"), 0.99), ("novel-13", jpeg(other), 0.50)],
    })  # fmt: skip
    name = {v: k for k, v in ids.items()}
    queue = admin.samples(bundle="scenes", state="pending")
    listed = [name[e["id"]] for e in queue]

    # One entry per group: the four copies of the confusing scene stand behind their best.
    assert sorted(listed) == sorted(["conf-2", "alike-3", "alike-4", "scene-4", "novel-6",
                                     "novel-8", "novel-11", "novel-13"]), listed  # fmt: skip
    conf = by_id(queue)[ids["conf-2"]]["queue"]
    assert conf["copies"] == 4 and conf["group"] is not None
    # Two views of one scene: the one its device scored higher goes first, the other is a
    # repeat of it; repeats come after every novel scene, though they scored higher (0.92 and
    # 0.60 against 0.50).
    similar = {name[e["id"]]: e["queue"]["similar_to"] for e in queue}
    assert sorted(listed[-2:]) == ["conf-2", "scene-4"], listed
    assert similar["conf-2"] == ids["alike-3"] and similar["scene-4"] == ids["alike-4"]
    assert all(similar[n] is None for n in listed[:-2])
    novelty = {name[e["id"]]: e["queue"]["novelty"] for e in queue}
    assert novelty["conf-2"] < 0.5 and novelty["scene-4"] < 0.5
    assert all(novelty[n] == 1.0 for n in listed[:-2])
    # The seed's copy arrived annotated: it inherited the seed's boxes, halved with its size.
    done = by_id(admin.samples(bundle="scenes", state="annotated"))
    assert done[ids["seed-copy"]]["annotation"]["inherited_from"] == seed
    assert done[ids["seed-copy"]]["annotation"]["boxes"] == [[5.0, 10.0, 55.0, 110.0, "scene"]]

    # A human annotates the group's representative: every copy takes it.
    admin.annotate(ids["conf-2"], [[40.0, 40.0, 200.0, 160.0, "scene"]], "ann")  # type: ignore[list-item]
    done = by_id(admin.samples(bundle="scenes", state="annotated"))
    for copy in ("conf-1", "conf-3", "conf-4"):
        assert done[ids[copy]]["annotation"]["inherited_from"] == ids["conf-2"], copy
    assert done[ids["conf-4"]]["annotation"]["boxes"] == [[20.0, 20.0, 100.0, 80.0, "scene"]]
    assert done[ids["conf-1"]]["annotation"]["boxes"] == [[40.0, 40.0, 200.0, 160.0, "scene"]]
    pending = admin.samples(bundle="scenes", state="pending")
    after = [name[e["id"]] for e in pending]
    # alike-3 now repeats an annotated scene: it joins scene-4 at the end.
    assert "conf-2" not in after and len(after) == 7
    assert sorted(after[-2:]) == ["alike-3", "scene-4"]
    assert by_id(pending)[ids["alike-3"]]["queue"]["similar_to"] == ids["conf-2"]

    # A fifth camera sends the confusing scene later: annotated on arrival, never queued.
    late = run_devices(live_hub, tmp_path, {"cam-5": [("late", copy_of(confusing, "noise"), 1.0)]})
    done = by_id(admin.samples(bundle="scenes", state="annotated"))
    assert done[late["late"]]["annotation"]["inherited_from"] == ids["conf-2"]
    assert late["late"] not in {e["id"] for e in admin.samples(bundle="scenes", state="pending")}
