"""Make, inspect and apply patches: the public surface behind ``bsdiff/__init__.py``.

Making (hub, at publish time): pick a codec, build the payload, prefix the header, and by
default apply the patch once to prove it reproduces the new file. Applying (device): the
header is checked first (magic, then the CRC over header and payload, version, codec, sizes
against the caller's cap and the payload length), then the base (size, sha256), and only
then is the payload parsed; the result is hashed as it is produced and compared with the
header at the end. Every failure is a :class:`~bsdiff.errors.DeltaError`; the caller then
fetches the full file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from bsdiff._generic import GENERIC, default_generic, small_diffs
from bsdiff._header import (
    PatchHeader,
    pack_header,
    unpack_header,
    verify_before_apply,
)
from bsdiff._onnx import Tensor, find_onnx_tensors
from bsdiff._tensor import apply_tensor_payload, make_tensor_payload
from bsdiff.errors import (
    CodecUnavailableError,
    DeltaError,
    PatchCorruptError,
    ResultMismatchError,
)

__all__ = [
    "CODECS",
    "apply_patch",
    "apply_patch_file",
    "codec_name",
    "find_model_tensors",
    "make_patch",
    "read_header",
]

Buffer = bytes | bytearray | memoryview

TENSOR_CODEC_ID = 16
_TRY_GENERIC_BELOW = 64 << 10
CODECS: dict[str, int] = {**{c.name: c.id for c in GENERIC.values()}, "tensor": TENSOR_CODEC_ID}
"""Every codec name a patch may carry, with its numeric id in the header."""


def codec_name(codec_id: int) -> str:
    """The name of ``codec_id``; raises PatchCorruptError for an unknown id."""
    for name, cid in CODECS.items():
        if cid == codec_id:
            return name
    raise PatchCorruptError(f"patch names unknown codec id {codec_id}")


def find_model_tensors(data: Buffer) -> list[Tensor] | None:
    """The tensor byte ranges of a recognised model file (ONNX), or None."""
    return find_onnx_tensors(data)


def _payload(old: Buffer, new: Buffer, codec: str) -> tuple[int, bytes]:
    if codec == "tensor" or codec == "auto":
        old_t = find_model_tensors(old)
        new_t = find_model_tensors(new) if old_t else None
        if old_t and new_t:
            payload = make_tensor_payload(old, new, old_t, new_t)
            if payload is not None:
                if codec == "auto" and len(payload) < _TRY_GENERIC_BELOW:
                    # Almost nothing changed: the tensor table is then a visible share of the
                    # patch, and a whole-file generic delta may be smaller. Keep the smallest.
                    options = [(TENSOR_CODEC_ID, payload)]
                    options += [(c.id, p) for c, p in small_diffs(old, new)]
                    return min(options, key=lambda o: len(o[1]))
                return TENSOR_CODEC_ID, payload
        if codec == "tensor":
            raise DeltaError("tensor codec: both files must be recognised model files")
        candidates = small_diffs(old, new)
        if candidates:
            chosen, smallest = min(candidates, key=lambda o: len(o[1]))
            return chosen.id, smallest
        generic = default_generic()
    else:
        if codec not in GENERIC:
            raise DeltaError(f"unknown codec {codec!r} (known: auto, {', '.join(CODECS)})")
        generic = GENERIC[codec]
        if not generic.available():
            raise CodecUnavailableError(f"codec {codec!r} is not installed")
    return generic.id, generic.diff(old, new)


def make_patch(old: Buffer, new: Buffer, codec: str = "auto", *, verify: bool = True) -> bytes:
    """A patch turning ``old`` into ``new``.

    ``codec`` is ``auto`` (the tensor codec for recognised model files, else the smallest
    hdiffpatch-based payload; on small model changes the smallest of both), ``tensor``, or a
    generic codec name (``hdiffpatch``, ``hdiffpatch-lzma``, ``zstd-dict``, ``bsdiff4``,
    ``zstd``). With ``verify`` the patch is applied once before it is returned.
    Raises DeltaError (CodecUnavailableError when the codec's library is missing).
    """
    codec_id, payload = _payload(old, new, codec)
    header = PatchHeader(
        codec=codec_id,
        base_size=len(old),
        result_size=len(new),
        payload_size=len(payload),
        base_sha256=hashlib.sha256(old).digest(),
        result_sha256=hashlib.sha256(new).digest(),
    )
    patch = pack_header(header, payload) + payload
    if verify:
        apply_patch(old, patch)  # raises if the codec got it wrong; the hashes decide
    return patch


def read_header(patch: Buffer) -> PatchHeader:
    """The checked header of ``patch`` (magic, CRC, version, sizes, codec id).

    Raises PatchCorruptError.
    """
    header = unpack_header(patch)
    codec_name(header.codec)
    return header


class _Sink:
    """Counts and hashes the result as it is produced; refuses a byte past the promised size."""

    def __init__(self, header: PatchHeader, write: Callable[[Buffer], object]) -> None:
        self.header = header
        self.write_out = write
        self.size = 0
        self.sha = hashlib.sha256()

    def __call__(self, data: Buffer) -> None:
        self.size += len(data)
        if self.size > self.header.result_size:
            raise ResultMismatchError(
                f"patch produces more than the {self.header.result_size} bytes it promised"
            )
        self.sha.update(data)
        self.write_out(data)

    def finish(self) -> None:
        if self.size != self.header.result_size:
            raise ResultMismatchError(
                f"patch produced {self.size} bytes, header says {self.header.result_size}"
            )
        if not self.sha.digest().startswith(self.header.result_sha256):
            raise ResultMismatchError("patch result sha256 differs from the header")


def _apply(
    old: Buffer, patch: Buffer, max_result: int | None, sink_write: Callable[[Buffer], object]
) -> PatchHeader:
    header = read_header(patch)
    payload = memoryview(patch)[header.header_size :]
    verify_before_apply(header, old, payload, max_result)
    sink = _Sink(header, sink_write)
    try:
        if header.codec == TENSOR_CODEC_ID:
            apply_tensor_payload(old, payload, header.result_size, sink, header.version)
        else:
            codec = GENERIC[codec_name(header.codec)]
            if codec.stream is not None:
                codec.stream(old, payload, header.result_size, sink)
            else:
                sink(codec.patch(old, payload, header.result_size))
    except DeltaError:
        raise
    except Exception as e:  # a bug or a crafted payload must still end in "use the full file"
        raise PatchCorruptError(f"{codec_name(header.codec)} payload failed to apply: {e!r}") from e
    sink.finish()
    return header


def apply_patch(old: Buffer, patch: Buffer, max_result: int | None = None) -> bytes:
    """The file ``patch`` makes from ``old``, verified against the header's sha256.

    ``max_result`` caps the result size the caller accepts (e.g. the signed target length).
    Raises DeltaError: PatchCorruptError, BaseMismatchError, PatchLimitError,
    ResultMismatchError or CodecUnavailableError.
    """
    out = io.BytesIO()
    _apply(old, patch, max_result, out.write)
    return out.getvalue()


def apply_patch_file(
    old_path: str | os.PathLike[str],
    patch_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    max_result: int | None = None,
) -> PatchHeader:
    """Apply a patch file to a base file and write the result to ``out_path`` atomically.

    The patch (and, for the tensor and ``hdiffpatch-lzma`` codecs, the base) is memory-mapped
    and those codecs stream their result to disk, so peak memory stays near the base file's
    size; the other generic codecs hold the base and the result in memory (two to three times
    the file). The result goes to
    a temp file in the same folder, is fsynced, and replaces ``out_path`` only after its sha256
    matched; on any failure nothing is left behind. Raises DeltaError (OSError for I/O faults).
    """
    out_path = Path(out_path)
    with contextlib.ExitStack() as stack:
        patch = _map(stack, Path(patch_path))
        if _streams(read_header(patch).codec):
            old = _map(stack, Path(old_path))  # streamed: only the touched pages are resident
        else:
            old = Path(old_path).read_bytes()  # generic libraries want bytes: no second copy
        fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".part", dir=out_path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                header = _apply(old, patch, max_result, _writer(f))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return header


def _streams(codec_id: int) -> bool:
    """Whether the codec writes its result in pieces from a memory-mapped base."""
    if codec_id == TENSOR_CODEC_ID:
        return True
    codec = GENERIC.get(next((n for n, i in CODECS.items() if i == codec_id), ""))
    return codec is not None and codec.stream is not None


def _writer(f: BinaryIO) -> Callable[[Buffer], object]:
    return f.write


def _map(stack: contextlib.ExitStack, path: Path) -> Buffer:
    f = stack.enter_context(path.open("rb"))
    if os.fstat(f.fileno()).st_size == 0:
        return b""
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = memoryview(m)

    def close() -> None:
        # A traceback may still hold numpy views of the map; then the GC closes it later.
        with contextlib.suppress(BufferError):
            view.release()
            m.close()

    stack.callback(close)
    return view
