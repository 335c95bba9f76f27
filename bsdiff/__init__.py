"""Delta patches for bundle files: a generic binary codec and a tensor-aware model codec.

The hub makes a patch per bundle file from each base version its devices run
(:func:`make_patch`); a device applies it to the exact base it has (:func:`apply_patch`,
:func:`apply_patch_file`) and gets the new file, or a :class:`DeltaError` and then downloads
the full file. This package imports nothing of leanloop's; applying needs only numpy and
zstandard (plus the ``hdiffpatch`` wheel for patches made with that generic codec).

Patch format (version 2; full layout, and version 1 which is still read, in ``FORMAT.md``)::

    offset size  field
         0    4  magic  b"LLD\\x1a"
         4    4  CRC-32 (little-endian) of every byte from offset 8 to the end of the patch
         8    1  format version (2)
         9    1  codec id: 1 zstd, 2 hdiffpatch, 3 bsdiff4, 4 zstd-dict, 5 hdiffpatch-lzma,
                 16 tensor
        10  1-10 base size (LEB128 varint), then result size, then payload size
         …   16  base sha256, first 128 bits
         …   16  result sha256, first 128 bits
         …       payload (codec-specific)

Apply checks, in order and before reading any payload byte: the magic, the CRC over header
and payload, the version, the sizes and the codec id; the result size against the caller's
cap; the base size and sha256. The result is hashed as it is written and must match. (128
bits suffice: the device picks a delta by the full signed base sha256 and checks the full
signed sha256 of the result; see ``FORMAT.md``.)

Codecs: ``tensor`` for ONNX files (tensors matched by content, name, then type+shape;
unchanged ones cost a table entry, changed ones are coded as zigzagged bit-pattern differences
split into byte planes and zstd'd; the graph bytes go through the generic codec). Generic:
``hdiffpatch`` (the default, chosen by measurement), ``hdiffpatch-lzma`` (the same diff
uncompressed in one raw LZMA stream: smallest on tiny diffs), ``zstd-dict`` (``zstd --patch-from``
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
from bsdiff._header import FORMAT_VERSION, HASH_BYTES, MAGIC, PatchHeader
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
    "HASH_BYTES",
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
