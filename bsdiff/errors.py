"""Exceptions of the delta codec: one root, :class:`DeltaError`, and a few narrow families.

Every failure to apply a patch is a :class:`DeltaError`; the caller's answer is always the same
(download the full file instead), but the subclass and the one-line message tell an operator
why. Foreign exceptions (zstandard, bsdiff4, hdiffpatch, numpy) are wrapped at the boundary.
"""

from __future__ import annotations

__all__ = [
    "BaseMismatchError",
    "CodecUnavailableError",
    "DeltaError",
    "PatchCorruptError",
    "PatchLimitError",
    "ResultMismatchError",
]


class DeltaError(Exception):
    """Root of every error raised by :mod:`bsdiff`."""


class PatchCorruptError(DeltaError):
    """The patch is malformed: bad magic, checksum, version, codec id, sizes or payload."""


class BaseMismatchError(DeltaError):
    """The patch was made against another base file (size or sha256 differ)."""


class PatchLimitError(DeltaError):
    """The patch announces a result larger than the caller allows."""


class ResultMismatchError(DeltaError):
    """The applied result differs from what the header promised (size or sha256)."""


class CodecUnavailableError(DeltaError):
    """The codec the patch needs (or the caller asked for) is not installed here."""
