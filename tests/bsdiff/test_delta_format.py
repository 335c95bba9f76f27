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
from bsdiff._header import MAGIC_V1, pack_header

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
    assert h.result_sha256 == hashlib.sha256(new).digest()[: bsdiff.HASH_BYTES]
    assert len(patch) == h.header_size + h.payload_size
    assert h.header_size <= 60  # version 2: compact, whatever the codec


def test_patch_when_files_identical_is_small() -> None:
    old, new = PAIRS["identical"]
    assert len(bsdiff.make_patch(old, new)) < 200


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


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _forge(fields: bytes, payload: bytes) -> bytes:
    """A version-2 patch from raw header fields (after the CRC) with a valid CRC again."""
    return bsdiff.MAGIC + struct.pack("<I", zlib.crc32(fields + payload)) + fields + payload


def _fields(old: bytes, new: bytes, payload: bytes, *, version: int = 2, codec: int = 2) -> bytes:
    return (
        bytes([version, codec])
        + _varint(len(old))
        + _varint(len(new))
        + _varint(len(payload))
        + hashlib.sha256(old).digest()[:16]
        + hashlib.sha256(new).digest()[:16]
    )


def _resign(patch: bytes, **fields: int | bytes) -> bytes:
    """``patch`` with header fields replaced and a valid CRC again (a consistent forgery)."""
    h = dataclasses.replace(bsdiff.read_header(patch), **fields)  # type: ignore[arg-type]
    payload = patch[bsdiff.read_header(patch).header_size :]
    return pack_header(h, payload) + payload


OLD, NEW = PAIRS["edited"]
GOOD = bsdiff.make_patch(OLD, NEW, "hdiffpatch" if "hdiffpatch" in AVAILABLE else "zstd-dict")
GOOD_H = bsdiff.read_header(GOOD)
PAYLOAD = GOOD[GOOD_H.header_size :]
# Where each version-2 header field starts in GOOD (sizes are varints: computed, not fixed).
AT = {"magic": 0, "crc": 4, "version": 8, "codec": 9, "base_size": 10}
AT["result_size"] = AT["base_size"] + len(_varint(len(OLD)))
AT["payload_size"] = AT["result_size"] + len(_varint(len(NEW)))
AT["base_sha"] = AT["payload_size"] + len(_varint(len(PAYLOAD)))
AT["result_sha"] = AT["base_sha"] + 16
GOOD_FIELDS = GOOD[8 : GOOD_H.header_size]

# Every header field, the CRC itself, payload bytes at the start, middle and end, and
# consistent forgeries (CRC valid again) of the fields the CRC cannot vouch for.
FAULTS: dict[str, tuple[Callable[[], bytes], bytes, type[bsdiff.DeltaError], str]] = {
    **{
        f"flip_{field}": (lambda at=at: _flip(GOOD, at), OLD, bsdiff.PatchCorruptError, "checksum")
        for field, at in AT.items()
        if field != "magic"
    },
    "flip_magic": (lambda: _flip(GOOD, 0), OLD, bsdiff.PatchCorruptError, "magic"),
    "flip_payload_first": (
        lambda: _flip(GOOD, GOOD_H.header_size),
        OLD,
        bsdiff.PatchCorruptError,
        "checksum",
    ),
    "flip_payload_mid": (
        lambda: _flip(GOOD, (GOOD_H.header_size + len(GOOD)) // 2),
        OLD,
        bsdiff.PatchCorruptError,
        "checksum",
    ),
    "flip_payload_last": (
        lambda: _flip(GOOD, len(GOOD) - 1),
        OLD,
        bsdiff.PatchCorruptError,
        "checksum",
    ),
    "truncated_header": (lambda: GOOD[:20], OLD, bsdiff.PatchCorruptError, "checksum"),
    "truncated_payload": (lambda: GOOD[:-1], OLD, bsdiff.PatchCorruptError, "checksum"),
    "extra_byte": (lambda: GOOD + b"\0", OLD, bsdiff.PatchCorruptError, "checksum"),
    "empty": (lambda: b"", OLD, bsdiff.PatchCorruptError, "too short"),
    "magic_only": (lambda: GOOD[:7], OLD, bsdiff.PatchCorruptError, "too short"),
    "wrong_base": (lambda: GOOD, _flip(OLD, 5), bsdiff.BaseMismatchError, "sha256"),
    "short_base": (lambda: GOOD, OLD[:-1], bsdiff.BaseMismatchError, "bytes"),
    "resigned_version": (
        lambda: _forge(bytes([3]) + GOOD_FIELDS[1:], PAYLOAD),
        OLD,
        bsdiff.PatchCorruptError,
        "version 3",
    ),
    "resigned_codec": (lambda: _resign(GOOD, codec=99), OLD, bsdiff.PatchCorruptError, "codec"),
    "resigned_payload_size": (
        lambda: _forge(GOOD_FIELDS, PAYLOAD + b"\0"),
        OLD,
        bsdiff.PatchCorruptError,
        "header says",
    ),
    "resigned_nonminimal_size": (
        lambda: _forge(GOOD_FIELDS[:2] + b"\x80\x00" + GOOD_FIELDS[2:], PAYLOAD),
        OLD,
        bsdiff.PatchCorruptError,
        "malformed size",
    ),
    "resigned_endless_size": (
        lambda: _forge(GOOD_FIELDS[:2] + b"\xff" * 11, b""),
        OLD,
        bsdiff.PatchCorruptError,
        "malformed size",
    ),
    "resigned_no_hashes": (
        lambda: _forge(GOOD_FIELDS[: AT["base_sha"] - 8 + 10], b""),
        OLD,
        bsdiff.PatchCorruptError,
        "truncated",
    ),
    "resigned_base_size": (
        lambda: _resign(GOOD, base_size=len(OLD) + 1),
        OLD,
        bsdiff.BaseMismatchError,
        "bytes",
    ),
    "resigned_base_sha": (
        lambda: _resign(GOOD, base_sha256=bytes(16)),
        OLD,
        bsdiff.BaseMismatchError,
        "sha256",
    ),
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
    """Payload bytes flipped *and* the CRC recomputed: the codec itself must cope."""
    patch = bsdiff.make_patch(OLD, NEW, codec)
    h = bsdiff.read_header(patch)
    rng = random.Random(codec)
    for _ in range(40):
        body = bytearray(patch[h.header_size :])
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        forged = pack_header(h, body) + bytes(body)
        try:
            out = bsdiff.apply_patch(OLD, forged)
        except bsdiff.DeltaError:
            continue
        assert out == NEW  # a flip in slack bytes may be harmless, but never a wrong result


def test_header_layout_matches_the_documented_offsets() -> None:
    h = GOOD_H
    assert GOOD[:4] == bsdiff.MAGIC
    assert struct.unpack_from("<I", GOOD, 4)[0] == zlib.crc32(GOOD[8:])
    assert _fields(OLD, NEW, PAYLOAD, codec=h.codec) == GOOD_FIELDS
    assert (h.version, h.base_size, h.result_size) == (2, len(OLD), len(NEW))
    assert h.header_size == len(GOOD) - len(PAYLOAD) == AT["result_sha"] + 16
    assert h.payload_sha256 is None
    assert bsdiff.codec_name(h.codec) in bsdiff.CODECS


def _v1(old: bytes, new: bytes, codec: str) -> bytes:
    """A version-1 patch (140-byte header, full hashes, payload sha256) of ``codec``."""
    patch = bsdiff.make_patch(old, new, codec)
    h = bsdiff.read_header(patch)
    payload = patch[h.header_size :]
    full = dataclasses.replace(
        h,
        version=1,
        base_sha256=hashlib.sha256(old).digest(),
        result_sha256=hashlib.sha256(new).digest(),
    )
    return pack_header(full, payload) + payload


@pytest.mark.parametrize("codec", ["auto", *AVAILABLE])
def test_apply_when_patch_is_version_1_still_round_trips(codec: str) -> None:
    old, new = PAIRS["edited"]
    v1 = _v1(old, new, codec)
    assert v1.startswith(MAGIC_V1)
    h = bsdiff.read_header(v1)
    assert (h.version, h.header_size, h.result_sha256) == (1, 140, hashlib.sha256(new).digest())
    assert bsdiff.apply_patch(old, v1) == new


V1 = _v1(OLD, NEW, "zstd-dict")
V1_FAULTS: dict[str, tuple[bytes, type[bsdiff.DeltaError], str]] = {
    "version": (_flip(V1, 8), bsdiff.PatchCorruptError, "checksum"),
    "codec": (_flip(V1, 10), bsdiff.PatchCorruptError, "checksum"),
    "flags": (_flip(V1, 12), bsdiff.PatchCorruptError, "checksum"),
    "sizes": (_flip(V1, 24), bsdiff.PatchCorruptError, "checksum"),
    "hashes": (_flip(V1, 72), bsdiff.PatchCorruptError, "checksum"),
    "payload_sha": (_flip(V1, 104), bsdiff.PatchCorruptError, "checksum"),
    "crc": (_flip(V1, 136), bsdiff.PatchCorruptError, "checksum"),
    "payload": (_flip(V1, 140), bsdiff.PatchCorruptError, "payload sha256"),
    "truncated_header": (V1[:100], bsdiff.PatchCorruptError, "shorter"),
    "truncated_payload": (V1[:-1], bsdiff.PatchCorruptError, "header says"),
}


@pytest.mark.parametrize("fault", sorted(V1_FAULTS))
def test_apply_when_version_1_patch_is_bad_refuses_before_parsing_payload(
    fault: str, no_payload_parsing: None
) -> None:
    patch, error, words = V1_FAULTS[fault]
    with pytest.raises(error, match=words):
        bsdiff.apply_patch(OLD, patch)


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


@pytest.mark.skipif("hdiffpatch-lzma" not in AVAILABLE, reason="hdiffpatch not installed")
def test_hdiffpatch_lzma_when_payload_claims_a_huge_diff_refuses_before_inflating() -> None:
    # body length 2^40 (times two, not transposed) and a few stream bytes: must not allocate.
    payload = _varint(1 << 41) + b"\0" * 8
    with pytest.raises(bsdiff.PatchCorruptError, match="impossible length"):
        GENERIC["hdiffpatch-lzma"].patch(OLD, payload, len(NEW))


@pytest.mark.skipif("hdiffpatch-lzma" not in AVAILABLE, reason="hdiffpatch not installed")
def test_hdiffpatch_lzma_when_diff_is_small_beats_hdiffpatch_framing() -> None:
    old, new = PAIRS["edited"]
    lean = bsdiff.make_patch(old, new, "hdiffpatch-lzma")
    framed = bsdiff.make_patch(old, new, "hdiffpatch")
    assert bsdiff.apply_patch(old, lean) == new
    assert len(lean) < len(framed)


@pytest.mark.skipif("hdiffpatch-lzma" not in AVAILABLE, reason="hdiffpatch not installed")
def test_hdiffpatch_lzma_when_library_is_absent_still_applies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The device reads the diff itself: only making it needs the hdiffpatch wheel."""
    from bsdiff import _generic

    patch = bsdiff.make_patch(OLD, NEW, "hdiffpatch-lzma")
    plain = bsdiff.make_patch(OLD, NEW, "hdiffpatch")

    def missing(module: str) -> object:
        raise bsdiff.CodecUnavailableError(f"codec library {module!r} is not installed")

    monkeypatch.setattr(_generic, "_optional", missing)
    assert bsdiff.apply_patch(OLD, patch) == NEW
    (tmp_path / "old").write_bytes(OLD)
    (tmp_path / "p").write_bytes(patch)
    bsdiff.apply_patch_file(tmp_path / "old", tmp_path / "p", tmp_path / "new")
    assert (tmp_path / "new").read_bytes() == NEW
    with pytest.raises(bsdiff.CodecUnavailableError):  # while the plain codec needs it
        bsdiff.apply_patch(OLD, plain)
