"""Hub datasets: import an archive as versions, export in another format, one report of every
problem with nothing stored, unsafe archives refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hub.api._common import DB
from hub.testing import API, HubTestSession
from tests.trainer.datasets.dsgen import write_png
from trainer.datasets import read_dataset, write_dataset
from trainer.datasets.model import Box, Dataset, Item

pytestmark = pytest.mark.asyncio


@pytest.fixture
def hub_storage(hub_backend: dict[str, Any]) -> dict[str, Any]:
    """Every test here runs on SQLite + blob folder and on PostgreSQL + S3."""
    return hub_backend


def tgz(folder: Path, arcname: str = ".") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def detection_set(root: Path) -> Dataset:
    items = []
    for n in range(3):
        src = write_png(root / "src" / f"im{n}.png", 32, 24, seed=n)
        items.append(
            Item(
                path=f"im{n}.png",
                width=32,
                height=24,
                boxes=[Box(x1=1, y1=2, x2=10.5, y2=20, label=["cat", "dog"][n % 2])],
                source=src,
            )
        )
    return Dataset(task="detection", classes=["cat", "dog"], ontology_id="pets", items=items)


async def post_archive(hub: HubTestSession, name: str, fmt: str, data: bytes) -> Any:
    resp = await hub.client.post(
        f"{API}/admin/datasets/{name}", params={"format": fmt}, data=data, headers=hub.admin
    )
    return resp.status, await resp.json()


async def test_dataset_round_trips_when_imported_and_exported(
    hub: HubTestSession, tmp_path: Path
) -> None:
    ds = detection_set(tmp_path)
    write_dataset("coco", ds, tmp_path / "coco")
    status, body = await post_archive(hub, "pets", "coco", tgz(tmp_path / "coco"))
    assert status == 200, body
    assert body["version"] == 1 and body["items"] == 3
    assert body["counts"] == {"cat": 2, "dog": 1} and body["ontology"]["id"] == "pets"
    # An archive of the folder itself (tar czf x.tgz coco) reads the same.
    status, body = await post_archive(hub, "pets", "coco", tgz(tmp_path / "coco", "coco"))
    assert status == 200 and body["version"] == 2 and body["items"] == 3
    resp = await hub.client.get(
        f"{API}/admin/datasets/pets/export",
        params={"format": "yolo", "version": "1"},
        headers=hub.admin,
    )
    assert resp.status == 200, await resp.text()
    out = tmp_path / "exported"
    with tarfile.open(fileobj=io.BytesIO(await resp.read())) as tar:
        tar.extractall(out, filter="data")
    assert read_dataset("yolo", out).content() == ds.content()
    # The exported YOLO set goes back in as version 3 with the same content.
    status, body = await post_archive(hub, "pets", "yolo", tgz(out))
    assert status == 200 and body["version"] == 3
    listing = await (await hub.client.get(f"{API}/admin/datasets", headers=hub.admin)).json()
    assert [(v["name"], v["version"]) for v in listing] == [("pets", 1), ("pets", 2), ("pets", 3)]


async def test_import_reports_every_problem_and_stores_nothing_when_annotations_are_bad(
    hub: HubTestSession, tmp_path: Path
) -> None:
    root = tmp_path / "bad"
    (root / "labels").mkdir(parents=True)
    (root / "data.yaml").write_text("names: [cat]\n")
    write_png(root / "images" / "a.png", 10, 10)
    (root / "images" / "b.png").write_bytes(b"garbage")
    (root / "labels" / "a.txt").write_text("3 0.5 0.5 0.1 0.1\n0 0.99 0.5 0.2 0.2\n")
    status, body = await post_archive(hub, "bad", "yolo", tgz(root))
    assert status == 400
    assert "3 problems, nothing imported" in body["error"]
    where = [p["where"] for p in body["problems"]]
    assert where == ["labels/a.txt:1", "images/b.png", "a.png box 0"]
    assert hub.client.app[DB].dataset_versions("bad") == []


async def test_import_is_refused_when_the_archive_is_unsafe_or_the_format_unknown(
    hub: HubTestSession, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    status, body = await post_archive(hub, "x", "coco", buf.getvalue())
    assert status == 400 and "escapes the dataset folder" in body["error"]
    status, body = await post_archive(hub, "x", "coco", b"not a tar")
    assert status == 400 and "not a readable tar" in body["error"]
    status, body = await post_archive(hub, "x", "voc", b"")
    assert status == 400 and "format must be one of coco" in body["error"]
    resp = await hub.client.get(f"{API}/admin/datasets/nothing", headers=hub.admin)
    assert resp.status == 404
