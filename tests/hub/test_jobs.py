"""Training jobs through the API with a fake trainer command, and safe artifact extraction."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hub.api._common import DB
from hub.client import safe_extract_tar
from hub.storage import HubDB
from hub.testing import API, sample_form, sample_meta
from hub.testing import HubTestSession as Hub
from runtime.errors import BundleError


async def _wait_job(hub: Hub, job: int) -> dict[str, Any]:
    for _ in range(400):
        body: dict[str, Any] = await (
            await hub.client.get(f"{API}/admin/jobs/{job}", headers=hub.admin)
        ).json()
        if body["state"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job} did not finish: {body}")


async def _annotated(hub: Hub, sid: str, label: str, priority: float = 0.5) -> None:
    cam = await hub.enroll("cam-1")
    await hub.client.put(
        f"{API}/device/samples/{sid}",
        data=sample_form(sample_meta(sid, "cam-1", priority), image=f"img-{sid}".encode()),
        headers=cam,
    )
    body = {"boxes": [[1, 2, 3, 4, label]], "annotator": "ann"}
    resp = await hub.client.post(
        f"{API}/admin/samples/{sid}/annotation", json=body, headers=hub.admin
    )
    assert resp.status == 200


async def _train(hub: Hub, **extra: Any) -> int:
    body = {"bundle": "digits", "version": 2, **extra}
    resp = await hub.client.post(f"{API}/admin/jobs/train", json=body, headers=hub.admin)
    assert resp.status == 200, await resp.text()
    return int((await resp.json())["job"])


@pytest.mark.asyncio
async def test_train_job_when_fake_trainer_succeeds_exports_samples_and_packs_source(
    hub: Hub,
) -> None:
    await _annotated(hub, "0000000000000001-00000001", "7")
    await _annotated(hub, "0000000000000002-00000002", "3")
    job = await _train(hub)
    status = await _wait_job(hub, job)
    assert status["state"] == "done", status
    assert "fake trainer: 2 samples, init_from=None" in status["log_tail"]

    resp = await hub.client.get(f"{API}/admin/jobs/{job}/artifact", headers=hub.admin)
    assert resp.status == 200
    with tarfile.open(fileobj=io.BytesIO(await resp.read())) as tar:
        names = set(tar.getnames())
        seen = json.loads(tar.extractfile("seen.json").read())  # type: ignore[union-attr]
    assert {"pipeline.yaml", "models/m.onnx", "checkpoint"} <= names
    assert seen["images"] == ["0000000000000001-00000001.jpg", "0000000000000002-00000002.jpg"]
    assert {json.dumps(x) for x in seen["lines"]} == {
        json.dumps({"id": "0000000000000001-00000001", "boxes": [[1.0, 2.0, 3.0, 4.0, "7"]]}),
        json.dumps({"id": "0000000000000002-00000002", "boxes": [[1.0, 2.0, 3.0, 4.0, "3"]]}),
    }

    second = await _train(hub, init_from=job)
    status = await _wait_job(hub, second)
    assert status["state"] == "done"
    expected = hub.config.data_dir / "jobs" / str(job) / "source" / "checkpoint"
    assert f"init_from={expected}" in status["log_tail"]


@pytest.mark.asyncio
async def test_train_job_when_trainer_fails_is_failed_with_log_tail(hub: Hub) -> None:
    await _annotated(hub, "0000000000000001-00000001", "FAIL")
    job = await _train(hub)
    status = await _wait_job(hub, job)
    assert status["state"] == "failed"
    assert "status 3" in status["error"]
    assert "boom: asked to fail" in status["log_tail"]
    resp = await hub.client.get(f"{API}/admin/jobs/{job}/artifact", headers=hub.admin)
    assert resp.status == 409


@pytest.mark.asyncio
async def test_train_job_when_no_annotated_samples_fails(hub: Hub) -> None:
    status = await _wait_job(hub, await _train(hub))
    assert status["state"] == "failed"
    assert "no annotated samples" in status["error"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("init_from", "status"), [(99, 404), (1, 409)])
async def test_train_job_when_init_from_is_unknown_or_unfinished_is_rejected(
    hub: Hub, init_from: int, status: int
) -> None:
    body = {"bundle": "digits", "version": 2, "init_from": init_from}
    if init_from == 1:
        # a job row the runner never picked up: it stays queued
        hub.client.app[DB].add_job({"bundle": "none"})
    resp = await hub.client.post(f"{API}/admin/jobs/train", json=body, headers=hub.admin)
    assert resp.status == status


@pytest.mark.asyncio
async def test_unknown_job_when_asked_is_404(hub: Hub) -> None:
    for path in ("/admin/jobs/42", "/admin/jobs/abc", "/admin/jobs/42/artifact"):
        assert (await hub.client.get(f"{API}{path}", headers=hub.admin)).status == 404


def test_job_runner_start_when_previous_process_died_marks_running_failed(tmp_path: Path) -> None:
    from hub.jobs import JobRunner
    from hub.storage import BlobStore

    db = HubDB(tmp_path / "db.sqlite3")
    running = db.add_job({"bundle": "digits"})
    db.set_job(running, "running")

    async def start_and_stop() -> None:
        runner = JobRunner(db, BlobStore(tmp_path / "blobs"), tmp_path / "jobs", ["false"])
        await runner.start()
        await runner.stop()

    asyncio.run(start_and_stop())
    job = db.job(running)
    assert job.state == "failed"
    assert job.error is not None and "stopped" in job.error


def _tar(**members: tarfile.TarInfo | bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, m in members.items():
            if isinstance(m, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(m)
                tar.addfile(info, io.BytesIO(m))
            else:
                tar.addfile(m)
    return buf.getvalue()


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    "archive",
    [
        _tar(**{"../evil": b"x"}),
        _tar(**{"/etc/evil": b"x"}),
        _tar(**{"a/../../evil": b"x"}),
        _tar(link=_special("link", tarfile.SYMTYPE, "/etc/passwd")),
        _tar(hard=_special("hard", tarfile.LNKTYPE, "pipeline.yaml")),
        _tar(dev=_special("dev", tarfile.CHRTYPE)),
        _tar(fifo=_special("fifo", tarfile.FIFOTYPE)),
        b"not a tar at all",
    ],
    # (named: a gzip header holds the time, so the bytes differ between xdist workers)
    ids=["dotdot", "absolute", "nested-dotdot", "symlink", "hardlink", "chr", "fifo", "not-tar"],
)
def test_safe_extract_tar_when_member_is_unsafe_rejects_and_writes_nothing(
    archive: bytes, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    with pytest.raises(BundleError):
        safe_extract_tar(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil").exists()


def test_safe_extract_tar_when_archive_is_plain_extracts_files(tmp_path: Path) -> None:
    names = safe_extract_tar(_tar(**{"pipeline.yaml": b"p", "models/m.onnx": b"m"}), tmp_path)
    assert sorted(names) == ["models/m.onnx", "pipeline.yaml"]
    assert (tmp_path / "models" / "m.onnx").read_bytes() == b"m"


BARRIER_TRAINER = """
import argparse, os, pathlib, sys, time
p = argparse.ArgumentParser()
p.add_argument("--annotations"); p.add_argument("--images"); p.add_argument("--out")
p.add_argument("--init-from")
a = p.parse_args()
shared = pathlib.Path(sys.argv[0]).parent / "started"
shared.mkdir(exist_ok=True)
(shared / str(os.getpid())).touch()
deadline = time.monotonic() + 20
while len(list(shared.iterdir())) < 2:  # the other job must be running at the same time
    if time.monotonic() > deadline:
        print("alone: the other job never started", file=sys.stderr); sys.exit(3)
    time.sleep(0.05)
out = pathlib.Path(a.out); (out / "models").mkdir(parents=True)
(out / "pipeline.yaml").write_text("format: leanloop.pipeline/1\\nstages: []\\n")
"""


@pytest.mark.asyncio
async def test_train_jobs_when_concurrency_is_2_run_at_the_same_time(
    aiohttp_client: Any, config: Any, keys_dir: Path, tmp_path: Path
) -> None:
    from hub.app import create_app

    trainer = tmp_path / "barrier" / "trainer.py"
    trainer.parent.mkdir()
    trainer.write_text(BARRIER_TRAINER)
    cfg = config.model_copy(
        update={"job_concurrency": 2, "trainer_command": [sys.executable, str(trainer)]}
    )
    hub = Hub(await aiohttp_client(create_app(cfg)), cfg, keys_dir)
    await _annotated(hub, "0000000000000001-00000001", "7")
    jobs = [await _train(hub), await _train(hub)]
    for job in jobs:  # each waits for the other: with one job at a time the first one fails
        status = await _wait_job(hub, job)
        assert status["state"] == "done", status
