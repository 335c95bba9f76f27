"""Training jobs: export the annotated samples, run the trainer as a subprocess, pack its output.

A job is a row (``queued``) plus a folder ``<data>/jobs/<id>/``. One job runs at a time by
default (a training run wants every core of a small hub); the config's ``job_concurrency`` runs
that many at once (e.g. two small jobs with one torch thread each). The runner

1. exports the bundle's annotated samples: ``annotations.jsonl`` (one
   ``{"id": …, "boxes": [[x1, y1, x2, y2, "label"], …]}`` per line) and ``images/<id>.jpg``;
2. runs ``<trainer_command> --annotations F --images D --out <job>/source
   [--init-from <data>/jobs/<prev>/source/checkpoint]
   [--params JSON]`` with stdout and stderr to ``job.log``
   (``trainer_command`` is ``python -m trainer.job`` unless the config says otherwise);
3. packs ``source/`` as ``source.tar.gz`` (the artifact) and marks the job ``done`` — or
   ``failed`` with a one-line error at any step.

A job whose params hold a training ``spec`` (``leanloop.train/1``, see ``docs/training.md``)
runs the spec-driven trainer instead: the samples become a native dataset folder
(``dataset/dataset.json`` + images; classes from the job's ``classes`` or the labels seen; a
sample's ``label`` for classification is its boxes' single label), the spec is written with
that dataset and, with ``init_from``, the earlier job's checkpoint as warm start, and
``<spec_command> --spec spec.json --out source --progress progress.json`` runs. The job status
shows ``progress.json`` (epoch, validation metric, confusion matrix) while it runs and the model
card's metrics once it is done.

The state is persisted before each step. On start, a job found ``running`` died with the previous
hub process and is marked ``failed``; ``queued`` ones are queued again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

from hub.storage import Blobs, HubDB, Sample
from runtime.errors import LeanloopError, first_line

__all__ = [
    "JobRunner",
    "export_dataset",
    "export_samples",
    "job_progress",
    "log_tail",
    "pack_source",
]

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


def export_dataset(
    samples: list[Sample],
    blobs: Blobs,
    folder: Path,
    classes: list[str] | None,
    name: str,
    ontology: tuple[str, int] | None = None,
) -> int:
    """Write annotated samples as a native dataset folder (:mod:`trainer.datasets.native`),
    labelled in ``ontology`` (id, version) when known. Returns the number of items. Raises
    trainer's DatasetError listing labels outside ``classes``, or naming samples labelled
    under another ontology version (docs/datasets.md: no mapping, no mixing)."""
    import cv2
    import numpy as np

    from hub.ontology import mixed_versions
    from trainer.datasets.model import Box, Dataset, DatasetError, Item
    from trainer.datasets.native import save_dataset

    mixed = mixed_versions([s.meta for s in samples], ontology[1] if ontology else None)
    if mixed:
        raise DatasetError([mixed])

    items = []
    seen: set[str] = set()
    for sample in samples:
        data = blobs.read(sample.image_sha256)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            continue  # an undecodable upload is no training example
        rows = (sample.annotation or {}).get("boxes", [])
        boxes = [Box.of(r) for r in rows]
        labels = {b.label for b in boxes}
        seen |= labels
        items.append(
            Item(
                id=sample.id,
                path=f"images/{sample.id}{_image_suffix(data)}",
                data=data,
                width=img.shape[1],
                height=img.shape[0],
                label=next(iter(labels)) if len(labels) == 1 else None,
                boxes=boxes,
            )
        )
    onto_id, onto_version = ontology or ("default", 1)
    ds = Dataset(
        task="detection",
        name=name,
        version=str(len(items)),
        ontology_id=onto_id,
        ontology_version=onto_version,
        classes=classes or sorted(seen),
        items=items,
    )
    save_dataset(ds.check(), folder)
    return len(items)


def _image_suffix(data: bytes) -> str:
    return ".png" if data[:4] == b"\x89PNG" else ".jpg"


def stamp_source(source: Path, history_file: Path) -> None:
    """Write the hub's ontology version (changes, mapping from the previous version) into a
    trained source's ``ontology.yaml``, so devices remap their store when they commit it. A
    source whose classes match no version is left as the trainer wrote it (with a warning)."""
    if not history_file.exists() or not (source / "ontology.yaml").exists():
        return
    import yaml

    from hub.ontology import stamp_ontology
    from runtime.bundle.manifest import Ontology

    path = source / "ontology.yaml"
    try:
        current = Ontology.model_validate(yaml.safe_load(path.read_text()))
        new = stamp_ontology(current, json.loads(history_file.read_text()))
    except (OSError, ValueError, yaml.YAMLError) as e:
        log.warning("%s: not stamped with the hub's ontology version: %s", path, e)
        return
    data = new.model_dump(mode="json", exclude_defaults=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def job_progress(job_dir: Path) -> dict[str, Any] | None:
    """A spec job's last progress line, or its model card's metrics once written."""
    card = job_dir / "source" / "model_card.json"
    progress = job_dir / "progress.json"
    try:
        if card.is_file():
            body = json.loads(card.read_text())
            return {"metrics": body.get("metrics"), "search": body.get("search")}
        if progress.is_file():
            return dict(json.loads(progress.read_text()))
    except (OSError, ValueError):
        return None
    return None


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
    """Runs queued jobs in ``concurrency`` background tasks (one job at a time each)."""

    def __init__(
        self,
        db: HubDB,
        blobs: Blobs,
        jobs_dir: Path,
        trainer_command: list[str],
        timeout_s: float | None = None,
        spec_command: list[str] | None = None,
        concurrency: int = 1,
    ) -> None:
        self._db = db
        self._concurrency = max(1, concurrency)
        self._blobs = blobs
        self._jobs_dir = jobs_dir
        self._command = list(trainer_command)
        self._spec_command = list(spec_command or [sys.executable, "-m", "trainer.run"])
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        from hub.autotrain import AutoTrain

        self.auto = AutoTrain(jobs_dir / "auto_train.json", db, self)

    def job_dir(self, job_id: int) -> Path:
        """The folder of one job."""
        return self._jobs_dir / str(job_id)

    def checkpoint(self, job_id: int) -> Path:
        """Where a finished job's trainer left its checkpoint (for ``--init-from``)."""
        return self.job_dir(job_id) / "source" / "checkpoint"

    async def start(self, recover: bool = True) -> None:
        """Recover jobs of a previous process and start the worker task.

        With hub replicas only the leading one recovers (``recover``): a job another replica is
        running is not dead.
        """
        if not recover:
            self._start_workers()
            return
        for job_id in await self._db.call(self._db.jobs_in, "running"):
            await self._db.call(
                self._db.set_job,
                job_id,
                "failed",
                error="the hub stopped while the job was running",
            )
        for job_id in await self._db.call(self._db.jobs_in, "queued"):
            self._queue.put_nowait(job_id)
        self._start_workers()

    def _start_workers(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"leanloop-job-runner-{k}")
            for k in range(self._concurrency)
        ]

    async def stop(self) -> None:
        """Cancel the workers; a running trainer process is killed and its job marked failed."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
        source = job_dir / "source"
        argv: list[str] = []
        count = 0
        if job.params.get("spec") and job.params.get("datasets"):
            try:  # hub datasets instead of annotated samples (hub/datasets.py)
                count = await self._hub_datasets(job.params["datasets"], job_dir)
            except LeanloopError as e:
                await self._db.call(self._db.set_job, job_id, "failed", error=str(e))
                return
            argv = await loop.run_in_executor(None, self._spec_job, job.params, [], job_dir, True)
        elif not samples:
            count = 0
        elif job.params.get("spec"):
            # The hub's current ontology, when it manages one, fixes the classes and their order
            # (samples are remapped when it changes, so they are all in its latest version);
            # else the published bundle's. Its history lets the source be stamped.
            params = dict(job.params)
            managed = await self._db.call(self._db.sample_ontology, samples[0].id)
            published = await self._db.call(self._db.bundle_ontology, job.params["bundle"])
            if managed is not None:
                params["classes"] = params.get("classes") or managed.classes
                params["ontology"] = (managed.id, managed.version)
                history = await self._db.call(self._db.ontology_versions, managed.id)
                (job_dir / "ontology_history.json").write_text(
                    json.dumps([v.to_dict() for v in history])
                )
            elif published is not None:  # its id and version (the classes: as labelled)
                params["ontology"] = (published[0], published[1])
            argv = await loop.run_in_executor(None, self._spec_job, params, samples, job_dir)
            count = len(samples)
        else:
            count = await loop.run_in_executor(None, export_samples, samples, self._blobs, job_dir)
            argv = [
                *self._command,
                "--annotations", str(job_dir / "annotations.jsonl"),
                "--images", str(job_dir / "images"),
                "--out", str(source),
            ]  # fmt: skip
            if job.params.get("init_from") is not None:
                argv += ["--init-from", str(self.checkpoint(int(job.params["init_from"])))]
            # A hub-managed ontology fixes the class names (the samples were remapped to its
            # latest version); its history lets the source be stamped for the devices' remap.
            labelled_in = await self._db.call(self._db.bundle_ontology, job.params["bundle"])
            if labelled_in is not None and labelled_in[3]:
                onto_id, onto_version, classes, versions = labelled_in
                onto = {"id": onto_id, "version": onto_version, "classes": classes}
                (job_dir / "ontology.json").write_text(json.dumps(onto))
                (job_dir / "ontology_history.json").write_text(json.dumps(versions))
                argv += ["--ontology", str(job_dir / "ontology.json")]
            if job.params.get("params"):
                argv += ["--params", json.dumps(job.params["params"])]
        if count == 0 or not argv:
            await self._db.call(
                self._db.set_job,
                job_id,
                "failed",
                error=f"no annotated samples for {job.params['bundle']}",
            )
            return
        with open(log_path, "ab") as log_file:
            log_file.write(f"$ {' '.join(argv)}\n{count} annotated samples\n".encode())
            log_file.flush()
            # OpenMP's idle threads spin by default; on a busy 2-core hub that made a training
            # step cost 5x its CPU (measured in the demo). A user's own setting wins.
            env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=log_file, stderr=asyncio.subprocess.STDOUT, cwd=job_dir, env=env
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
        await loop.run_in_executor(None, stamp_source, source, job_dir / "ontology_history.json")
        await loop.run_in_executor(None, pack_source, source, artifact)
        await self._db.call(self._db.set_job, job_id, "done", artifact_path=str(artifact))

    async def _hub_datasets(self, names: list[str], job_dir: Path) -> int:
        """Write hub dataset versions ('name' or 'name:version') as the job's training set,
        aligned to one ontology version; the history goes beside it for the stamp. Returns
        the item count. Raises DatasetError, NotFound."""
        from hub.datasets import training_set

        db = self._db
        stored = []
        for ref in names:
            name, _, ver = ref.partition(":")
            v = await db.call(db.dataset_version, name, int(ver) if ver.isdigit() else None)
            stored.append((v, await db.call(db.dataset_items, v.name, v.version)))
        onto_id = stored[0][0].ontology_id
        history = (
            [h.to_dict() for h in await db.call(db.ontology_versions, onto_id)] if onto_id else []
        )
        if history:
            (job_dir / "ontology_history.json").write_text(json.dumps(history))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, training_set, self._blobs, job_dir / "dataset", stored, history
        )

    def _spec_job(
        self,
        params: dict[str, Any],
        samples: list[Sample],
        job_dir: Path,
        dataset_ready: bool = False,
    ) -> list[str]:
        """Write the dataset folder (unless ``dataset_ready``) and the job's spec; return the
        trainer's argv."""
        from trainer.spec import parse_spec

        if not dataset_ready:
            export_dataset(
                samples,
                self._blobs,
                job_dir / "dataset",
                params.get("classes"),
                params["bundle"],
                params.get("ontology"),
            )
        spec = parse_spec(params["spec"], "job spec")
        update: dict[str, Any] = {
            "dataset": spec.dataset.model_copy(update={"path": job_dir / "dataset"})
        }
        if params.get("init_from") is not None:
            ckpt = self.checkpoint(int(params["init_from"]))
            key = "classifier" if spec.task == "classify" else "detector"
            update["warm_start"] = ckpt / f"{key}.pt"
            if spec.task == "detect_then_classify":  # both stages start from the earlier job
                update["crop_warm_start"] = ckpt / "classifier.pt"
        spec = spec.model_copy(update=update)
        (job_dir / "spec.json").write_text(spec.model_dump_json(indent=1))
        return [
            *self._spec_command,
            "--spec", str(job_dir / "spec.json"),
            "--out", str(job_dir / "source"),
            "--progress", str(job_dir / "progress.json"),
        ]  # fmt: skip
