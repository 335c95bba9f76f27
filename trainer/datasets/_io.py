"""Helpers the format modules share: safe paths under a root, image copies, JSON reading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainer.datasets.model import Box, Dataset, Item, check_image_path
from trainer.datasets.report import Report, image_size

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MAX_JSON_BYTES = 512 * 1024 * 1024


def read_json(path: Path, report: Report) -> Any:
    """Parsed JSON of ``path``, or None (and a problem noted) when it is missing or invalid."""
    where = path.name
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            report.add(where, f"over {MAX_JSON_BYTES} bytes")
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.add(where, "file is missing")
    except (OSError, UnicodeDecodeError) as e:
        report.add(where, f"unreadable: {e}")
    except json.JSONDecodeError as e:
        report.add(f"{where}:{e.lineno}", f"not valid JSON: {e.msg}")
    return None


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def make_box(where: str, report: Report, **fields: Any) -> Box | None:
    try:
        return Box(**fields)
    except ValidationError as e:
        report.add(where, f"bad box: {first_error(e)}")
        return None


def locate_image(root: Path, rel: str, subdirs: tuple[str, ...] = ("", "images")) -> Path | None:
    """The file for image path ``rel`` under ``root`` (or one of ``subdirs``), if it exists."""
    for sub in subdirs:
        p = root / sub / rel if sub else root / rel
        if p.is_file():
            return p
    return None


def sized_item(
    root: Path,
    rel: str,
    where: str,
    report: Report,
    declared: tuple[int, int] | None = None,
    subdirs: tuple[str, ...] = ("", "images"),
    **annotation: Any,
) -> Item | None:
    """An item for image ``rel``: the file found, decoded, its size checked against
    ``declared`` (when the format states one). Problems are noted; None when unusable."""
    try:
        check_image_path(rel)
    except ValueError as e:
        report.add(where, str(e))
        return None
    src = locate_image(root, rel, subdirs)
    if src is None:
        report.add(where, f"image {rel!r} is missing")
        return None
    try:
        size = image_size(src)
    except ValueError as e:
        report.add(where, f"image {rel!r}: {e}")
        return None
    if declared is not None and declared != size:
        report.add(
            where,
            f"image {rel!r} is {size[0]}x{size[1]}, the annotations say "
            f"{declared[0]}x{declared[1]}",
        )
        return None
    try:
        return Item(path=rel, width=size[0], height=size[1], source=src, **annotation)
    except ValidationError as e:
        report.add(where, first_error(e))
        return None


def copy_images(dataset: Dataset, out: Path, prefix: str = "images") -> None:
    """Copy every item's image to ``out/prefix/<path>``. Raises ValueError for an item
    whose bytes are nowhere."""
    for item in dataset.items:
        dst = out / prefix / item.path if prefix else out / item.path
        if item.data is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(item.data)
            continue
        if item.source is None:
            raise ValueError(f"{item.path}: no image bytes to export")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.resolve() != Path(item.source).resolve():
            shutil.copyfile(item.source, dst)


def write_classes(out: Path, classes: list[str]) -> None:
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")


def read_classes(path: Path, report: Report) -> list[str] | None:
    """Class names one per line (blank lines skipped), or None when the file is absent."""
    if not path.is_file():
        return None
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        report.add(path.name, f"unreadable: {e}")
        return None
