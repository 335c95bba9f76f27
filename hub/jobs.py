"""Training jobs: export the annotated samples, run the trainer as a subprocess, pack its output.

A job is a row (``queued``) plus a folder ``<data>/jobs/<id>/``. One job runs at a time (a
training run wants every core of a small hub). The runner

1. exports the bundle's annotated samples: ``annotations.jsonl`` (one
   ``{"id": …, "boxes": [[x1, y1, x2, y2, "label"], …]}`` per line) and ``images/<id>.jpg``;
2. runs ``<trainer_command> --annotations F --images D --out <job>/source
   [--init-from <data>/jobs/<prev>/source/checkpoint]
   [--params JSON]`` with stdout and stderr to ``job.log``
   (``trainer_command`` is ``python -m trainer.job`` unless the config says otherwise);
3. packs ``source/`` as ``source.tar.gz`` (the artifact) and marks the job ``done`` — or
   ``failed`` with a one-line error at any step.

The state is persisted before each step. On start, a job found ``running`` died with the previous
hub process and is marked ``failed``; ``queued`` ones are queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

from hub.storage import Blobs, HubDB, Sample
from runtime.errors import first_line

__all__ = ["JobRunner", "export_samples", "log_tail", "pack_source"]

log = logging.getLogger("leanloop.hub.jobs")

_LOG_TAIL_BYTES = 4096


def export_samples(samples: list[Sample], blobs: Blobs, job_dir: Path) -> int:
    """Write annotated samples for the trainer; return how many were written.

    Takes the rows (read on the event loop) so that only file work runs in a worker thread.
    """
    images = job_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(job_dir / "annotations.jsonl", "w", encoding="utf-8") as out:
        for sample in samples:
            boxes = (sample.annotation or {}).get("boxes", [])
            (images / f"{sample.id}.jpg").write_bytes(blobs.read(sample.image_sha256))
            out.write(json.dumps({"id": sample.id, "boxes": boxes}) + "\n")
    return len(samples)


def pack_source(source: Path, dest: Path) -> None:
    """Pack the files and folders of ``source`` (paths relative to it) into ``dest`` (tar.gz).

    Symlinks and other special files are left out: the archive holds only what a bundle build
    can read.
    """
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(source.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
    tmp.replace(dest)


def log_tail(path: str | None, limit: int = _LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a job log as text ('' if there is no log yet)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


class JobRunner:
    """Runs queued jobs one at a time in a background task."""

    def __init__(
        self,
        db: HubDB,
        blobs: Blobs,
        jobs_dir: Path,
        trainer_command: list[str],
        timeout_s: float | None = None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._jobs_dir = jobs_dir
        self._command = list(trainer_command)
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def job_dir(self, job_id: int) -> Path:
        """The folder of one job."""
        return self._jobs_dir / str(job_id)

    def checkpoint(self, job_id: int) -> Path:
        """Where a finished job's trainer left its checkpoint (for ``--init-from``)."""
        return self.job_dir(job_id) / "source" / "checkpoint"

    async def start(self) -> None:
        """Recover jobs of a previous process and start the worker task."""
        for job_id in await self._db.call(self._db.jobs_in, "running"):
            await self._db.call(
                self._db.set_job,
                job_id,
                "failed",
                error="the hub stopped while the job was running",
            )
        for job_id in await self._db.call(self._db.jobs_in, "queued"):
            self._queue.put_nowait(job_id)
        self._task = asyncio.create_task(self._work(), name="leanloop-job-runner")

    async def stop(self) -> None:
        """Cancel the worker; a running trainer process is killed and its job marked failed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, params: dict[str, Any]) -> int:
        """Queue a job with these params (``bundle``, ``version``, ``init_from``, ``params``)."""
        job_id = await self._db.call(self._db.add_job, params)
        self._queue.put_nowait(job_id)
        return job_id

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                await self._db.call(
                    self._db.set_job,
                    job_id,
                    "failed",
                    error="the hub stopped while the job was running",
                )
                raise
            except Exception as e:  # a job failure must never stop the runner
                log.exception("job %s failed", job_id)
                await self._db.call(
                    self._db.set_job,
                    job_id,
                    "failed",
                    error=first_line(f"{type(e).__name__}: {e}"),
                )

    async def _run(self, job_id: int) -> None:
        job = await self._db.call(self._db.job, job_id)
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        log_path = job_dir / "job.log"
        await self._db.call(self._db.set_job, job_id, "running", log_path=str(log_path))
        loop = asyncio.get_running_loop()
        samples = await self._db.call(self._db.samples, job.params["bundle"], "annotated", None)
        count = await loop.run_in_executor(None, export_samples, samples, self._blobs, job_dir)
        if count == 0:
            await self._db.call(
                self._db.set_job,
                job_id,
                "failed",
                error=f"no annotated samples for {job.params['bundle']}",
            )
            return
        source = job_dir / "source"
        argv = [
            *self._command,
            "--annotations", str(job_dir / "annotations.jsonl"),
            "--images", str(job_dir / "images"),
            "--out", str(source),
        ]  # fmt: skip
        if job.params.get("init_from") is not None:
            argv += ["--init-from", str(self.checkpoint(int(job.params["init_from"])))]
        if job.params.get("params"):
            argv += ["--params", json.dumps(job.params["params"])]
        with open(log_path, "ab") as log_file:
            log_file.write(f"$ {' '.join(argv)}\n{count} annotated samples\n".encode())
            log_file.flush()
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=log_file, stderr=asyncio.subprocess.STDOUT, cwd=job_dir
            )
            try:
                rc = await asyncio.wait_for(proc.wait(), self._timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                await self._db.call(
                    self._db.set_job,
                    job_id,
                    "failed",
                    error=f"trainer timed out after {self._timeout_s} s",
                )
                return
            except asyncio.CancelledError:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                raise
        if rc != 0:
            await self._db.call(
                self._db.set_job,
                job_id,
                "failed",
                error=f"trainer exited with status {rc}; see log",
            )
            return
        if not source.is_dir():
            await self._db.call(
                self._db.set_job,
                job_id,
                "failed",
                error="trainer exited 0 but wrote no source folder",
            )
            return
        artifact = job_dir / "source.tar.gz"
        await loop.run_in_executor(None, pack_source, source, artifact)
        await self._db.call(self._db.set_job, job_id, "done", artifact_path=str(artifact))
