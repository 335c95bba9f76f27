"""The sample store on a file system that fills up: the cap in force.

The file system may fill before the store reaches ``max_bytes`` (other files, a smaller
partition than configured). Before each write the store asks :meth:`DiskGuard.check` to compare
the disk's free space with what the write may need; when the disk cannot give the store
``max_bytes`` any more, the cap in force (:meth:`DiskGuard.cap`) drops to what it can — the
data file's size plus the free space, less a margin — so inserts evict the lowest-priority
records as at the cap and the disk never fills under LMDB's feet; the cap comes back when the
disk has room. If something else fills the disk at once and a commit fails, nothing is
written: the store reopens LMDB (a failed commit leaves it unusable), evicts down to the new
cap and says "disk full" in one line (:func:`full_disk_note`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("leanloop.store")


class DiskGuard:
    """Keeps the store at ``path`` within what its file system can still give it."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.disk_cap: int | None = None  # the cap in force while the disk is full

    def cap(self) -> int:
        """The cap in force: ``max_bytes``, or the data file's size while the disk is full."""
        return self.max_bytes if self.disk_cap is None else min(self.max_bytes, self.disk_cap)

    @property
    def full(self) -> bool:
        """Whether the disk holds the cap below ``max_bytes`` now."""
        return self.disk_cap is not None

    def room(self) -> tuple[int, int] | None:
        """(bytes free on the store's file system, size of the data file), or None."""
        try:
            st = os.statvfs(self.path)
            size = (self.path / "data.mdb").stat().st_size
        except OSError:
            return None
        return st.f_bavail * st.f_frsize, size

    def check(self, need: int) -> None:
        """Before a write: keep the store within what the disk can still give it.

        The data file may grow to ``size + free - need`` (``need``: the reserve plus this
        write's bytes, kept free for LMDB's copy-on-write pages), so while that is below
        ``max_bytes`` it is the cap in force: inserts evict the lowest-priority unprotected
        records exactly as at the cap, and the kernel never has to say ENOSPC unless something
        else fills the disk at once. A statvfs per write transaction.
        """
        room = self.room()
        if room is None:
            return
        free, size = room
        limit = size + free - need
        if limit >= self.max_bytes:
            if self.disk_cap is not None:
                log.warning(
                    "sample store %s: the disk has room again: cap back to max_bytes", self.path
                )
            self.disk_cap = None
            return
        if self.disk_cap is None:
            log.warning(
                "sample store %s: disk nearly full (%d bytes free): keeping within %d bytes "
                "instead of max_bytes %d, lowest priority out first",
                self.path,
                free,
                max(0, limit),
                self.max_bytes,
            )
        self.disk_cap = max(0, limit)


def full_disk_note(free: int, cap: int, evicted: int) -> str:
    """What the operator reads when a write failed on a full disk."""
    return (
        f"disk full ({free} bytes free): nothing was written; the store now keeps "
        f"within {cap} bytes ({evicted} lowest-priority samples evicted to "
        "make room), until the disk has room"
    )
