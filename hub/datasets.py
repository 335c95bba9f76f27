"""Dataset import and export on the hub (the work behind :mod:`hub.api.datasets`; blocking I/O,
run in a thread).

An import is a tar archive (gzip or not) of a dataset folder in one of the formats of
:mod:`trainer.datasets`. It is unpacked into a scratch folder (only regular files and folders,
none escaping it, the unpacked total capped), read and validated there — every problem in one
:class:`~trainer.datasets.DatasetError` — and only then are the images stored as blobs and the
version written in one transaction (by the route). An export writes the stored version in a
format into a scratch folder (images copied from the blob store) and packs it as a tar.gz.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from hub.errors import BadRequest, TooLarge
from hub.storage import Blobs
from hub.storage.datasets import DatasetItemRow, DatasetVersion
from trainer.datasets import Dataset, DatasetError, Item, read_dataset, write_dataset
from trainer.datasets.model import Box

__all__ = [
    "MAX_MEMBERS",
    "DatasetError",
    "as_dataset",
    "export_dataset",
    "read_archive",
    "training_set",
    "unpack_archive",
]

MAX_MEMBERS = 1_000_000


def unpack_archive(data: bytes, dest: Path, max_bytes: int) -> None:
    """Unpack a tar(.gz) into ``dest``. Raises BadRequest (links, escapes, not a tar) or
    TooLarge (over ``max_bytes`` unpacked, or too many members), before writing anything."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members: list[tarfile.TarInfo] = []
            total = 0
            for m in tar:
                if len(members) >= MAX_MEMBERS:
                    raise TooLarge(f"archive has over {MAX_MEMBERS} members")
                p = PurePosixPath(m.name)
                if p.is_absolute() or ".." in p.parts or "\\" in m.name:
                    raise BadRequest(f"archive member {m.name!r} escapes the dataset folder")
                if not (m.isfile() or m.isdir()):
                    raise BadRequest(f"archive member {m.name!r} is a link or special file")
                total += m.size
                if total > max_bytes:
                    raise TooLarge(f"archive unpacks to over {max_bytes} bytes")
                members.append(m)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BadRequest(f"dataset archive is not a readable tar: {e}") from e


def _root_of(folder: Path) -> Path:
    """An archive of one top folder (``tar czf x.tgz mydata``) is read from that folder."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        if _has_markers(inner) or any(p.is_dir() for p in inner.iterdir()):
            return inner
    return folder


def _has_markers(folder: Path) -> bool:
    names = {"annotations.json", "data.yaml", "tasks.json", "dataset.json", "classes.txt", "images"}
    return any((folder / n).exists() for n in names)


def read_archive(
    blobs: Blobs, scratch: Path, fmt: str, archive: bytes, max_bytes: int
) -> tuple[Dataset, list[DatasetItemRow]]:
    """Unpack, read and validate a dataset archive, and store its images as blobs; the rows
    to write as a new version (the caller writes them in one transaction). Raises
    DatasetError (every problem), BadRequest or TooLarge."""
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="import.", dir=scratch))
    try:
        unpack_archive(archive, tmp, max_bytes)
        ds = read_dataset(fmt, _root_of(tmp))
        rows = []
        for item in ds.items:
            assert item.source is not None
            sha, _ = blobs.put(Path(item.source).read_bytes())
            rows.append(DatasetItemRow(item.path, sha, item.width, item.height, item.annotation()))
        return ds, rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def as_dataset(v: DatasetVersion, rows: list[DatasetItemRow], images: Path | None) -> Dataset:
    """A stored version as a :class:`Dataset`; items point at ``images/<sha256>`` if given."""
    items = []
    for r in rows:
        ann = r.annotation
        items.append(
            Item(
                path=r.path,
                width=r.width,
                height=r.height,
                label=ann.get("label"),
                boxes=[
                    Box(x1=b[0], y1=b[1], x2=b[2], y2=b[3], label=b[4])
                    for b in ann.get("boxes") or []
                ],
                source=images / r.image_sha256 if images is not None else None,
            )
        )
    return Dataset(
        task=v.task,
        classes=v.classes,
        ontology_id=v.ontology_id,
        ontology_version=v.ontology_version,
        items=items,
    )


def export_dataset(
    blobs: Blobs, scratch: Path, v: DatasetVersion, rows: list[DatasetItemRow], fmt: str
) -> bytes:
    """A tar.gz of a stored version written in ``fmt``. Raises DatasetError."""
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="export.", dir=scratch))
    try:
        images = tmp / "blobs"
        images.mkdir()
        for r in rows:  # the blob store may be a bucket: copy what the export needs
            if not (images / r.image_sha256).exists():
                (images / r.image_sha256).write_bytes(blobs.read(r.image_sha256))
        write_dataset(fmt, as_dataset(v, rows, images), tmp / "dataset")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(tmp / "dataset", arcname=".")
        return buf.getvalue()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def training_set(
    blobs: Blobs,
    folder: Path,
    stored: list[tuple[DatasetVersion, list[DatasetItemRow]]],
    history: list[dict[str, object]],
) -> int:
    """Write stored dataset versions as one native training set in ``folder`` (the spec
    jobs' input), aligned to one ontology version (:func:`trainer.datasets.align.
    align_datasets`: mixed versions need ``history``, the hub's versions of the ontology).
    Returns the number of items. Raises DatasetError."""
    from trainer.datasets.align import OntologyStep, align_datasets

    images = folder.parent / "dataset-blobs"
    images.mkdir(parents=True, exist_ok=True)
    sets = []
    for v, rows in stored:
        for r in rows:
            if not (images / r.image_sha256).exists():
                (images / r.image_sha256).write_bytes(blobs.read(r.image_sha256))
        sets.append(as_dataset(v, rows, images))
    steps = [OntologyStep.model_validate(h) for h in history] or None
    merged = align_datasets(sets, steps)
    write_dataset("native", merged, folder)
    return len(merged.items)
