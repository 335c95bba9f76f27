"""Hub training jobs and ontology versions: samples of mixed versions are refused, the dataset
carries the ontology, and the trained source is stamped with the hub's changes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from hub.jobs import export_dataset, stamp_source
from hub.storage import BlobStore, Sample
from trainer.datasets.model import DatasetError
from trainer.datasets.native import load_dataset

HISTORY = [
    {"id": "things", "version": 1, "classes": ["cat", "dog", "car"], "changes": []},
    {
        "id": "things",
        "version": 2,
        "classes": ["animal", "car"],
        "changes": [{"op": "merge", "sources": ["cat", "dog"], "into": "animal"}],
    },
]


def samples(blobs: BlobStore, versions: list[int]) -> list[Sample]:
    _, png = cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))
    sha, _ = blobs.put(png.tobytes())
    return [
        Sample(
            id=f"s{n}", bundle="things", device_id="d", priority=0.5,
            meta={"id": f"s{n}", "ontology_version": v}, image_sha256=sha, state="annotated",
            annotation={"boxes": [[1, 1, 10, 10, "animal"]], "annotator": "a"}, created=1.0,
        )
        for n, v in enumerate(versions)
    ]  # fmt: skip


def test_training_export_refuses_samples_of_another_ontology_version(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    onto = ("things", 2)
    with pytest.raises(DatasetError) as e:
        export_dataset(samples(blobs, [2, 1, 1]), blobs, tmp_path / "ds", None, "things", onto)
    assert "mix ontology versions (version 1: 2 (e.g. s1, s2)); training needs version 2" in str(
        e.value
    )
    with pytest.raises(DatasetError, match="training needs one version"):
        export_dataset(samples(blobs, [1, 3]), blobs, tmp_path / "ds2", None, "things", None)


def test_training_export_carries_the_ontology_and_the_source_gets_its_changes(
    tmp_path: Path,
) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    classes, onto = ["animal", "car"], ("things", 2)
    assert export_dataset(samples(blobs, [2, 2]), blobs, tmp_path / "ds", classes, "x", onto) == 2
    ds, _ = load_dataset(tmp_path / "ds")
    assert (ds.ontology_id, ds.ontology_version, ds.classes) == ("things", 2, ["animal", "car"])
    source = tmp_path / "source"
    source.mkdir()
    (source / "ontology.yaml").write_text("id: things\nversion: 2\nclasses: [car, animal]\n")
    (tmp_path / "history.json").write_text(json.dumps(HISTORY))
    stamp_source(source, tmp_path / "history.json")
    got = yaml.safe_load((source / "ontology.yaml").read_text())
    assert got["classes"] == ["car", "animal"] and got["previous_version"] == 1
    assert got["mapping_from_previous"] == {"cat": "animal", "dog": "animal"}
    assert got["changes"] == HISTORY[1]["changes"]


FAKE_SPEC_TRAINER = """
import argparse, json, pathlib, yaml
p = argparse.ArgumentParser()
p.add_argument("--spec"); p.add_argument("--out"); p.add_argument("--progress")
a = p.parse_args()
spec = json.loads(pathlib.Path(a.spec).read_text())
ds = json.loads((pathlib.Path(spec["dataset"]["path"]) / "dataset.json").read_text())
out = pathlib.Path(a.out); out.mkdir(parents=True)
(out / "seen.json").write_text(json.dumps(ds))
onto = {"id": ds["ontology_id"], "version": ds["ontology_version"], "classes": ds["classes"]}
(out / "ontology.yaml").write_text(yaml.safe_dump(onto))
"""


def test_a_spec_job_trains_on_hub_datasets_aligned_to_the_latest_ontology_version(
    tmp_path: Path,
) -> None:
    import asyncio
    import sys
    import tarfile

    from hub.jobs import JobRunner
    from hub.storage import HubDB
    from hub.storage.datasets import DatasetItemRow

    db = HubDB(tmp_path / "hub.sqlite3")
    blobs = BlobStore(tmp_path / "blobs")
    _, png = cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))
    sha, _ = blobs.put(png.tobytes())
    db.create_ontology("things", ["cat", "dog", "car"])
    for version, label in ((1, "dog"), (2, "animal")):
        row = DatasetItemRow(f"v{version}.png", sha, 30, 20, {"boxes": [[1, 1, 9, 9, label]]})
        db.add_dataset_version("pets", "detection", HISTORY[version - 1]["classes"],  # type: ignore[arg-type]
                               ("things", version), {}, "coco", [row])  # fmt: skip
    db.change_ontology("things", HISTORY[1]["changes"])  # type: ignore[arg-type]
    trainer = tmp_path / "fake_spec_trainer.py"
    trainer.write_text(FAKE_SPEC_TRAINER)
    spec = {"task": "detect", "dataset": {"path": "."}, "epochs": 1}

    async def run() -> tuple[str, str | None, str | None]:
        runner = JobRunner(
            db, blobs, tmp_path / "jobs", ["false"], spec_command=[sys.executable, str(trainer)]
        )
        await runner.start()
        job_id = await runner.submit(
            {"bundle": "pets", "version": 2, "spec": spec, "datasets": ["pets:1", "pets"]}
        )
        for _ in range(600):
            job = db.job(job_id)
            if job.state in ("done", "failed"):
                break
            await asyncio.sleep(0.05)
        await runner.stop()
        return job.state, job.error, job.artifact_path

    state, error, artifact = asyncio.run(run())
    assert state == "done", error
    out = tmp_path / "artifact"
    with tarfile.open(str(artifact)) as tar:
        tar.extractall(out, filter="data")
    seen = json.loads(next(out.rglob("seen.json")).read_text())
    assert (seen["ontology_version"], seen["classes"]) == (2, ["animal", "car"])
    assert sorted(b["label"] for i in seen["items"] for b in i["boxes"]) == ["animal", "animal"]
    onto = yaml.safe_load(next(out.rglob("ontology.yaml")).read_text())
    assert onto["previous_version"] == 1 and onto["changes"] == HISTORY[1]["changes"]
    db.close()
