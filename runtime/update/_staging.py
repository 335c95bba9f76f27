"""The checks around staging a bundle in a slot folder, apart from the state machine.

What the installer asks of a slot folder before and after the fetcher fills it: is there room
for the planned files (:func:`check_space`), does every file hash as the signed manifest says
and is all of it on disk (:func:`verify_staged`), and what a failure means (:func:`staging_error`,
:func:`deterministic`). These read and flush files; none writes one, and none touches
:class:`~runtime.update.slots.Slots` — the installer alone moves a slot from one state to the
next.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path

from runtime._atomic import fsync_dir
from runtime.bundle.loader import verify_bundle_dir
from runtime.bundle.manifest import Manifest
from runtime.errors import (
    BackendError,
    BundleError,
    LeanloopError,
    PipelineError,
    TrustError,
    UpdateError,
    first_line,
)
from runtime.update import _testhooks

log = logging.getLogger("leanloop.update")

_BLOCK = 4096
_SPACE_MARGIN = 2 * _BLOCK


def check_space(
    manifest: Manifest, skipped: set[str], free_bytes: Callable[[], int], where: Path
) -> None:
    """Refuse before writing when the ``free_bytes()`` of ``where`` cannot hold the planned
    files (those of ``manifest`` not in ``skipped``). Raises UpdateError."""
    if not _testhooks.space_check_enabled():
        return
    # Files take whole blocks; the manifest and the skip list take one or two more.
    sizes = [f.size for rel, f in manifest.files.items() if rel not in skipped]
    need = sum(-(-n // _BLOCK) * _BLOCK for n in sizes) + _SPACE_MARGIN
    free = free_bytes()
    if need > free:
        raise UpdateError(
            f"not enough space for {manifest.name} v{manifest.version}: needs "
            f"{need} bytes, {free} free in {where}"
        )


def fsync_tree(root: Path) -> None:
    """Flush every file of a staged slot and its folders (the slot must survive a power cut)."""
    dirs = [root]
    for p in root.rglob("*"):
        if p.is_dir():
            dirs.append(p)
        else:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in dirs:
        fsync_dir(d)


def verify_staged(slot_dir: Path) -> None:
    """Every file hashes as the signed manifest says; all of it flushed to disk. Raises
    BundleError (or OSError)."""
    verify_bundle_dir(slot_dir)
    fsync_tree(slot_dir)


def staging_error(e: Exception, slot_dir: Path) -> tuple[LeanloopError, str | None]:
    """A staging failure as a LeanloopError, and the report cause it implies (None: keep)."""
    if isinstance(e, OSError):
        full = e.errno == errno.ENOSPC
        what = "disk full" if full else "cannot write"
        err = UpdateError(f"{what} while staging in {slot_dir}: {e.strerror}")
        return err, "disk_full" if full else "write_failed"
    if isinstance(e, LeanloopError):
        return e, None
    log.exception("staging: unexpected %s", type(e).__name__)
    return UpdateError(f"unexpected {type(e).__name__} while staging: {first_line(e)}"), None


def deterministic(e: LeanloopError) -> bool:
    """The same bundle would fail the same way again: mark the version bad."""
    return isinstance(e, BundleError | BackendError | PipelineError) and not isinstance(
        e, TrustError
    )
