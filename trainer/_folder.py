"""Writing a bundle source folder: all of it or nothing, and its golden images.

Both the spec-driven trainer (:mod:`trainer.run`) and the demo's source writer
(:mod:`trainer.source`) write a source folder the same way: into a temporary folder beside the
target, which replaces the target only once everything in it is written, so a reader sees the old
folder or the new one and a failed export leaves nothing half-written behind.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from trainer.errors import TrainerError

__all__ = ["replaced_folder", "write_golden"]


@contextmanager
def replaced_folder(out_dir: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``out_dir`` to write into; when the block ends without
    an error it replaces ``out_dir`` (whether or not one was there), and when it raises it is
    removed and ``out_dir`` is left as it was."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_golden(folder: Path, frames: Sequence[np.ndarray]) -> None:
    """Save BGR uint8 ``frames`` as ``folder/000.png``, ``001.png`` … (``folder`` is created).

    Raises TrainerError when a frame cannot be encoded as PNG.
    """
    folder.mkdir()
    for i, frame in enumerate(frames):
        ok, png = cv2.imencode(".png", frame)
        if not ok:
            raise TrainerError(f"golden image {i} cannot be encoded as PNG")
        (folder / f"{i:03d}.png").write_bytes(png.tobytes())
