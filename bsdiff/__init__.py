"""Delta patches for bundle files: a generic binary codec and a tensor-aware model codec.

The hub makes a patch per bundle file from each base version its devices run
(:func:`make_patch`); a device applies it to the exact base it has (:func:`apply_patch`,
:func:`apply_patch_file`) and gets the new file, or a :class:`DeltaError` and then downloads
the full file. This package imports nothing of leanloop's; applying needs only numpy and
zstandard (plus the ``hdiffpatch`` wheel for patches made with that generic codec).

Patch format (version 1, little-endian; full layout in ``FORMAT.md``)::

    offset size  field
         0    8  magic  b"LLDELTA\\x1a"
         8    2  format version (1)
        10    2  codec id: 1 zstd, 2 hdiffpatch, 3 bsdiff4, 4 zstd-dict, 16 tensor
        12    4  flags (0)
        16    8  base size
        24    8  result size
        32    8  payload size (exactly the bytes after the header)
        40   32  base sha256
        72   32  result sha256
       104   32  payload sha256
       136    4  CRC-32 of bytes 0..135
       140       payload (codec-specific)

Apply checks, in order and before reading any payload byte: the header CRC, magic, version,
flags and codec id; the payload length; the result size against the caller's cap; the base
size and sha256; the payload sha256. The result is hashed as it is written and must match.

Codecs: ``tensor`` for ONNX files (tensors matched by content, name, then type+shape;
unchanged ones cost a table entry, changed ones are coded as zigzagged bit-pattern differences
split into byte planes and zstd'd; the graph bytes go through the generic codec). Generic:
``hdiffpatch`` (the default, chosen by measurement), ``zstd-dict`` (``zstd --patch-from``
through python-zstandard), ``bsdiff4``, and ``zstd`` (no base at all).
"""

from __future__ import annotations

from bsdiff._api import (
    CODECS,
    apply_patch,
    apply_patch_file,
    codec_name,
    find_model_tensors,
    make_patch,
    read_header,
)
from bsdiff._header import FORMAT_VERSION, HEADER_SIZE, MAGIC, PatchHeader
from bsdiff.errors import (
    BaseMismatchError,
    CodecUnavailableError,
    DeltaError,
    PatchCorruptError,
    PatchLimitError,
    ResultMismatchError,
)

__all__ = [
    "CODECS",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "BaseMismatchError",
    "CodecUnavailableError",
    "DeltaError",
    "PatchCorruptError",
    "PatchHeader",
    "PatchLimitError",
    "ResultMismatchError",
    "apply_patch",
    "apply_patch_file",
    "codec_name",
    "find_model_tensors",
    "make_patch",
    "read_header",
]
