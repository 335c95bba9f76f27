"""The upload payload: one sample as it travels to the hub, in resumable parts.

``b"LLU1"``, the meta JSON's length (4 bytes, big-endian), the meta JSON, the image bytes. The
device encodes it (:func:`encode_payload`, :mod:`runtime.uploader`), names it by the sample id
and checks it by its sha256; the hub decodes it once complete (:func:`decode_payload`,
``hub/api/uploads.py``). Pure: no I/O.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

__all__ = ["decode_payload", "encode_payload"]

_PAYLOAD_MAGIC = b"LLU1"
_PAYLOAD_HEAD = struct.Struct(">4sI")  # magic, meta length


def encode_payload(meta: Mapping[str, Any], image: bytes) -> bytes:
    """One sample as uploaded: ``b"LLU1"``, meta length (4 bytes, big-endian), meta, image."""
    raw = json.dumps(meta, separators=(",", ":")).encode()  # key order kept: stages are ordered
    return _PAYLOAD_HEAD.pack(_PAYLOAD_MAGIC, len(raw)) + raw + bytes(image)


def decode_payload(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """(meta, image) of a payload. Raises ValueError with a one-line reason."""
    if len(payload) < _PAYLOAD_HEAD.size:
        raise ValueError("payload shorter than its header")
    magic, n = _PAYLOAD_HEAD.unpack_from(payload)
    if magic != _PAYLOAD_MAGIC:
        raise ValueError("payload does not start with LLU1")
    end = _PAYLOAD_HEAD.size + n
    if end > len(payload):
        raise ValueError("payload meta length runs past its end")
    try:
        meta = json.loads(payload[_PAYLOAD_HEAD.size : end])
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"payload meta is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise ValueError("payload meta is not a JSON object")
    return meta, payload[end:]
