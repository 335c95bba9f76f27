"""bsdiff: the patch format round-trips every codec, and every bad patch is refused early.

"Early" is checked with spies: the codecs' apply functions are replaced by ones that fail the
test, so a header/base/payload fault must be refused before the payload is parsed at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

import bsdiff
from bsdiff import _api
from bsdiff._generic import GENERIC
from bsdiff._header import HEADER_SIZE

AVAILABLE = [name for name, c in GENERIC.items() if c.available()]


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _edited(old: bytes) -> bytes:
    new = bytearray(old)
    for i in range(0, len(new), 997):
        new[i] ^= 0x5A
    return bytes(new[:1000]) + b"inserted" + bytes(new[1000:])


PAIRS: dict[str, tuple[bytes, bytes]] = {
    "random": (_data(1, 20_000), _data(2, 20_000)),
    "both_empty": (b"", b""),
    "from_empty": (b"", _data(3, 5_000)),
    "to_empty": (_data(4, 5_000), b""),
    "identical": (_data(5, 30_000), _data(5, 30_000)),
    "appended": (_data(6, 30_000), _data(6, 30_000) + _data(7, 3_000)),
    "truncated": (_data(8, 30_000), _data(8, 30_000)[:17_000]),
    "edited": (_data(9, 40_000), _edited(_data(9, 40_000))),
}


@pytest.mark.parametrize("codec", ["auto", *AVAILABLE])
@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_round_trip_when_codec_and_pair_vary_result_is_exact(codec: str, pair: str) -> None:
    old, new = PAIRS[pair]
    patch = bsdiff.make_patch(old, new, codec)
    assert bsdiff.apply_patch(old, patch) == new
    h = bsdiff.read_header(patch)
    assert (h.base_size, h.result_size) == (len(old), len(new))
    assert h.result_sha256 == hashlib.sha256(new).digest()
    assert len(patch) == HEADER_SIZE + h.payload_size


def test_patch_when_files_identical_is_small() -> None:
    old, new = PAIRS["identical"]
    assert len(bsdiff.make_patch(old, new)) < HEADER_SIZE + 200


def test_make_patch_when_codec_unknown_raises_delta_error() -> None:
    with pytest.raises(bsdiff.DeltaError, match="unknown codec"):
        bsdiff.make_patch(b"a", b"b", "nope")


def test_make_patch_when_tensor_codec_asked_for_non_model_raises_delta_error() -> None:
    with pytest.raises(bsdiff.DeltaError, match="model"):
        bsdiff.make_patch(b"abc" * 100, b"abd" * 100, "tensor")


@pytest.fixture
def no_payload_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any codec is asked to apply a payload."""

    def boom(*args: object) -> bytes:
        raise AssertionError("payload parsed before the patch was verified")

    spied = {name: dataclasses.replace(c, patch_raw=boom) for name, c in GENERIC.items()}
    monkeypatch.setattr(_api, "GENERIC", spied)
    monkeypatch.setattr(_api, "apply_tensor_payload", boom)


def _flip(patch: bytes, offset: int) -> bytes:
    b = bytearray(patch)
    b[offset] ^= 0x01
    return bytes(b)


def _resign(patch: bytes, **fields: int | bytes) -> bytes:
    """``patch`` with header fields replaced and a valid CRC again (a consistent forgery)."""
    h = dataclasses.replace(bsdiff.read_header(patch), **fields)  # type: ignore[arg-type]
    from bsdiff._header import pack_header

    return pack_header(h) + patch[HEADER_SIZE:]


OLD, NEW = PAIRS["edited"]
GOOD = bsdiff.make_patch(OLD, NEW)

# Every header field, the CRC itself, and payload bytes at the start, middle and end.
FAULTS: dict[str, tuple[Callable[[], bytes], bytes, type[bsdiff.DeltaError], str]] = {
    "magic": (lambda: _flip(GOOD, 0), OLD, bsdiff.PatchCorruptError, "magic"),
    "version": (lambda: _flip(GOOD, 8), OLD, bsdiff.PatchCorruptError, "checksum"),
    "codec": (lambda: _flip(GOOD, 10), OLD, bsdiff.PatchCorruptError, "checksum"),
    "flags": (lambda: _flip(GOOD, 12), OLD, bsdiff.PatchCorruptError, "checksum"),
    "base_size": (lambda: _flip(GOOD, 16), OLD, bsdiff.PatchCorruptError, "checksum"),
    "result_size": (lambda: _flip(GOOD, 24), OLD, bsdiff.PatchCorruptError, "checksum"),
    "payload_size": (lambda: _flip(GOOD, 32), OLD, bsdiff.PatchCorruptError, "checksum"),
    "base_sha": (lambda: _flip(GOOD, 40), OLD, bsdiff.PatchCorruptError, "checksum"),
    "result_sha": (lambda: _flip(GOOD, 72), OLD, bsdiff.PatchCorruptError, "checksum"),
    "payload_sha": (lambda: _flip(GOOD, 104), OLD, bsdiff.PatchCorruptError, "checksum"),
    "crc": (lambda: _flip(GOOD, 136), OLD, bsdiff.PatchCorruptError, "checksum"),
    "payload_first": (lambda: _flip(GOOD, HEADER_SIZE), OLD, bsdiff.PatchCorruptError, "payload"),
    "payload_mid": (
        lambda: _flip(GOOD, (HEADER_SIZE + len(GOOD)) // 2),
        OLD,
        bsdiff.PatchCorruptError,
        "payload",
    ),
    "payload_last": (lambda: _flip(GOOD, len(GOOD) - 1), OLD, bsdiff.PatchCorruptError, "payload"),
    "truncated_header": (lambda: GOOD[:100], OLD, bsdiff.PatchCorruptError, "shorter"),
    "truncated_payload": (lambda: GOOD[:-1], OLD, bsdiff.PatchCorruptError, "header says"),
    "extra_byte": (lambda: GOOD + b"\0", OLD, bsdiff.PatchCorruptError, "header says"),
    "empty": (lambda: b"", OLD, bsdiff.PatchCorruptError, "shorter"),
    "wrong_base": (lambda: GOOD, _flip(OLD, 5), bsdiff.BaseMismatchError, "sha256"),
    "short_base": (lambda: GOOD, OLD[:-1], bsdiff.BaseMismatchError, "bytes"),
    "resigned_version": (
        lambda: _resign(GOOD, version=2),
        OLD,
        bsdiff.PatchCorruptError,
        "version",
    ),
    "resigned_codec": (lambda: _resign(GOOD, codec=99), OLD, bsdiff.PatchCorruptError, "codec"),
    "resigned_flags": (lambda: _resign(GOOD, flags=1), OLD, bsdiff.PatchCorruptError, "flags"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_apply_when_patch_or_base_is_bad_refuses_before_parsing_payload(
    fault: str, no_payload_parsing: None
) -> None:
    make, old, error, words = FAULTS[fault]
    with pytest.raises(error, match=words) as info:
        bsdiff.apply_patch(old, make())
    assert "\n" not in str(info.value)


def test_apply_when_result_exceeds_cap_raises_limit_error(no_payload_parsing: None) -> None:
    with pytest.raises(bsdiff.PatchLimitError):
        bsdiff.apply_patch(OLD, GOOD, max_result=len(NEW) - 1)


def test_apply_when_header_promises_another_result_raises_result_mismatch() -> None:
    forged = _resign(GOOD, result_sha256=hashlib.sha256(b"other").digest())
    with pytest.raises(bsdiff.ResultMismatchError, match="sha256"):
        bsdiff.apply_patch(OLD, forged)


@pytest.mark.parametrize("codec", AVAILABLE)
def test_apply_when_payload_is_consistently_forged_raises_only_delta_error(codec: str) -> None:
    """Payload bytes flipped *and* the payload hash recomputed: the codec itself must cope."""
    patch = bsdiff.make_patch(OLD, NEW, codec)
    rng = random.Random(codec)
    for _ in range(40):
        body = bytearray(patch[HEADER_SIZE:])
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        resigned = _resign(patch, payload_sha256=hashlib.sha256(body).digest())
        forged = resigned[:HEADER_SIZE] + bytes(body)
        try:
            out = bsdiff.apply_patch(OLD, forged)
        except bsdiff.DeltaError:
            continue
        assert out == NEW  # a flip in slack bytes may be harmless, but never a wrong result


def test_header_layout_matches_the_documented_offsets() -> None:
    h = bsdiff.read_header(GOOD)
    assert GOOD[:8] == bsdiff.MAGIC
    assert struct.unpack_from("<HHIQQQ", GOOD, 8) == (
        1,
        h.codec,
        0,
        len(OLD),
        len(NEW),
        len(GOOD) - HEADER_SIZE,
    )
    assert GOOD[40:72] == hashlib.sha256(OLD).digest()
    assert GOOD[72:104] == hashlib.sha256(NEW).digest()
    assert GOOD[104:136] == hashlib.sha256(GOOD[HEADER_SIZE:]).digest()
    assert struct.unpack_from("<I", GOOD, 136)[0] == zlib.crc32(GOOD[:136])
    assert bsdiff.codec_name(h.codec) in bsdiff.CODECS


def test_apply_patch_file_when_patch_is_good_writes_result(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(OLD)
    (tmp_path / "p").write_bytes(GOOD)
    h = bsdiff.apply_patch_file(tmp_path / "old", tmp_path / "p", tmp_path / "new")
    assert (tmp_path / "new").read_bytes() == NEW
    assert h.result_size == len(NEW)


def test_apply_patch_file_when_base_is_wrong_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(_flip(OLD, 0))
    (tmp_path / "p").write_bytes(GOOD)
    with pytest.raises(bsdiff.BaseMismatchError):
        bsdiff.apply_patch_file(tmp_path / "old", tmp_path / "p", tmp_path / "new")
    assert sorted(os.listdir(tmp_path)) == ["old", "p"]
