"""bsdiff tensor codec on real ONNX files exported by torch: small where a generic delta is not.

One small CNN (conv + BN folded at export + a two-layer head) and four successors: a full
fine-tune (every weight moves by ~1e-3 relative), a head-only retrain, one class added (the
last Linear gets one more output, old rows kept), and the same weights re-exported under other
names. The patches must be exact, far smaller than the generic codec's where the tensors allow
it, and applying them must need neither torch nor onnx.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import bsdiff
from bsdiff import _api
from bsdiff._header import pack_header
from bsdiff._onnx import find_onnx_tensors
from bsdiff._tensor import KIND_COPY, KIND_DELTA, KIND_EXTEND, _plan, make_tensor_payload

ROOT = Path(__file__).resolve().parents[2]


class _Net(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        chans = [3, 16, 32, 64, 64]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.hidden = nn.Linear(64, 128)
        self.fc = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x).mean((2, 3))
        return self.fc(torch.relu(self.hidden(y)))


def _export(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(1, 3, 32, 32),),
            buf,  # type: ignore[arg-type]  # a BytesIO works; the stub says path
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
        )
    return buf.getvalue()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    torch.manual_seed(0)
    base = _Net()
    with torch.no_grad():
        for m in base.modules():
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    out = {"base": _export(base)}

    tuned = _Net()
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        moving = [*tuned.parameters()] + [b for b in tuned.buffers() if b.is_floating_point()]
        for t in moving:
            t.mul_(1 + 1e-3 * torch.randn(t.shape))
    out["finetune"] = _export(tuned)

    head = _Net()
    head.load_state_dict(base.state_dict())
    with torch.no_grad():
        head.fc.weight.normal_(0, 0.05)
        head.fc.bias.zero_()
    out["head"] = _export(head)

    more = _Net(classes=11)
    state = more.state_dict()
    for k, v in base.state_dict().items():
        if state[k].shape == v.shape:
            state[k] = v
        else:
            state[k][: v.shape[0]] = v
    more.load_state_dict(state)
    out["addclass"] = _export(more)

    wrapped = nn.Sequential()
    wrapped.add_module("renamed", base)
    out["reexport"] = _export(wrapped)
    return out


def _tensor_plan(patch: bytes, old: bytes):  # type: ignore[no-untyped-def]
    h = bsdiff.read_header(patch)
    assert bsdiff.codec_name(h.codec) == "tensor"
    return _plan(len(old), memoryview(patch)[h.header_size :], h.result_size, h.version)


def _stream_bytes(plan) -> int:  # type: ignore[no-untyped-def]
    return sum(len(v) for v in plan.streams.values())


def test_onnx_walker_when_model_exported_matches_onnx_initializers(
    models: dict[str, bytes],
) -> None:
    data = models["addclass"]
    found = {t.name: t for t in find_onnx_tensors(data) or []}
    proto = onnx.load_from_string(data)
    want = {t.name: t for t in proto.graph.initializer if len(t.raw_data) >= 64}
    assert set(found) == set(want)
    for name, t in found.items():
        assert data[t.offset : t.offset + t.length] == want[name].raw_data
        assert t.dims == tuple(want[name].dims)
        assert t.dtype == want[name].data_type


def test_onnx_walker_when_data_is_not_onnx_returns_none() -> None:
    assert find_onnx_tensors(b"") is None
    assert find_onnx_tensors(random.Random(0).randbytes(5000)) is None
    assert find_onnx_tensors(b"\x08\x07") is None  # protobuf, but no graph


@pytest.mark.parametrize("pair", ["finetune", "head", "addclass", "reexport"])
def test_tensor_codec_when_pair_varies_round_trips_exactly(
    models: dict[str, bytes], pair: str
) -> None:
    old, new = models["base"], models[pair]
    patch = bsdiff.make_patch(old, new, "tensor")
    assert bsdiff.apply_patch(old, patch) == new
    back = bsdiff.make_patch(new, old, "tensor")
    assert bsdiff.apply_patch(new, back) == old


@pytest.mark.parametrize("pair", ["finetune", "addclass"])
def test_tensor_codec_when_patch_is_version_1_still_applies(
    models: dict[str, bytes], pair: str, tmp_path: Path
) -> None:
    """A device may hold a version-1 patch: zstd table, zstd streams, 140-byte header."""
    old, new = models["base"], models[pair]
    payload = make_tensor_payload(
        old, new, find_onnx_tensors(old), find_onnx_tensors(new), version=1
    )
    assert payload is not None
    header = bsdiff.PatchHeader(
        codec=bsdiff.CODECS["tensor"],
        base_size=len(old),
        result_size=len(new),
        payload_size=len(payload),
        base_sha256=hashlib.sha256(old).digest(),
        result_sha256=hashlib.sha256(new).digest(),
        version=1,
    )
    v1 = pack_header(header, payload) + payload
    assert bsdiff.read_header(v1).header_size == 140
    assert bsdiff.apply_patch(old, v1) == new
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "p").write_bytes(v1)
    bsdiff.apply_patch_file(tmp_path / "old", tmp_path / "p", tmp_path / "new")
    assert (tmp_path / "new").read_bytes() == new
    v2 = bsdiff.make_patch(old, new, "tensor")
    assert len(v2) < len(v1)  # the version-2 table and stored streams are smaller


def test_tensor_codec_when_fully_fine_tuned_is_far_below_generic(models: dict[str, bytes]) -> None:
    old, new = models["base"], models["finetune"]
    ours = bsdiff.make_patch(old, new, "tensor")
    generic = bsdiff.make_patch(old, new, _api.default_generic().name)
    assert len(ours) < 0.62 * len(new)
    assert len(ours) < 0.75 * len(generic)
    plan = _tensor_plan(ours, old)
    assert all(kind == KIND_DELTA for kind, *_ in plan.entries)


def test_tensor_codec_when_head_retrained_codes_only_the_head(models: dict[str, bytes]) -> None:
    old, new = models["base"], models["head"]
    ours = bsdiff.make_patch(old, new, "tensor")
    plan = _tensor_plan(ours, old)
    changed = [e for e in plan.entries if e[0] != KIND_COPY]
    assert len(changed) == 1  # fc.weight (the zeroed bias is below the tensor threshold)
    head_bytes = 128 * 10 * 4
    assert _stream_bytes(plan) < head_bytes
    assert len(ours) <= len(bsdiff.make_patch(old, new, _api.default_generic().name)) + 200


def test_tensor_codec_when_class_added_stores_only_the_new_row(models: dict[str, bytes]) -> None:
    old, new = models["base"], models["addclass"]
    plan = _tensor_plan(bsdiff.make_patch(old, new, "tensor"), old)
    assert [e[0] for e in plan.entries].count(KIND_EXTEND) == 1  # fc.weight; fc.bias is small
    assert sum(plan.stream_sizes.values()) == 128 * 4  # one row of float32, nothing else


def test_tensor_codec_when_reexported_with_new_names_has_no_tensor_payload(
    models: dict[str, bytes],
) -> None:
    old, new = models["base"], models["reexport"]
    names_old = {t.name for t in find_onnx_tensors(old) or []}
    names_new = {t.name for t in find_onnx_tensors(new) or []}
    assert names_old != names_new  # the renaming is real
    patch = bsdiff.make_patch(old, new, "tensor")
    plan = _tensor_plan(patch, old)
    assert plan.streams == {}
    assert all(kind == KIND_COPY for kind, *_ in plan.entries)
    assert len(patch) < bsdiff.read_header(patch).header_size + 1500


def test_auto_codec_when_model_changes_little_is_never_larger_than_generic(
    models: dict[str, bytes],
) -> None:
    old = models["base"]
    for pair in ("addclass", "reexport"):
        auto = bsdiff.make_patch(old, models[pair])
        generic = bsdiff.make_patch(old, models[pair], _api.default_generic().name)
        assert len(auto) <= len(generic)


def test_tensor_patch_when_consistently_forged_raises_only_delta_error(
    models: dict[str, bytes],
) -> None:
    old, new = models["base"], models["finetune"]
    patch = bsdiff.make_patch(old, new, "tensor")
    header = bsdiff.read_header(patch)
    rng = random.Random(7)
    refused = 0
    for i in range(60):
        body = bytearray(patch[header.header_size :])
        # Half the flips hit the table and section lengths, where parsing is most delicate.
        span = 300 if i % 2 else len(body)
        body[rng.randrange(min(span, len(body)))] ^= 1 << rng.randrange(8)
        forged = pack_header(header, body) + bytes(body)  # a valid CRC again
        try:
            out = bsdiff.apply_patch(old, forged)
        except bsdiff.DeltaError:
            refused += 1
            continue
        assert out == new
    assert refused > 40


def test_apply_when_torch_and_onnx_are_absent_still_works(
    models: dict[str, bytes], tmp_path: Path
) -> None:
    old, new = models["base"], models["finetune"]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "patch").write_bytes(bsdiff.make_patch(old, new))
    code = (
        "import sys\n"
        "for m in ('torch', 'onnx', 'runtime', 'hub', 'trainer', 'leanloop'):\n"
        "    sys.modules[m] = None\n"
        "import bsdiff\n"
        f"bsdiff.apply_patch_file({str(tmp_path / 'old')!r}, {str(tmp_path / 'patch')!r},"
        f" {str(tmp_path / 'new')!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "new").read_bytes() == new


def test_bsdiff_when_imported_loads_nothing_of_ours() -> None:
    code = (
        "import sys, pkgutil, importlib, bsdiff\n"
        "for m in pkgutil.walk_packages(bsdiff.__path__, 'bsdiff.'):\n"
        "    importlib.import_module(m.name)\n"
        "ours = {'runtime', 'hub', 'trainer', 'leanloop', 'bench', 'torch', 'onnx'}\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ours)\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]


def test_zigzag_delta_when_values_wrap_round_trips() -> None:
    from bsdiff._tensor import _unzigzag_add, _zigzag_delta

    rng = np.random.default_rng(0)
    for width in (1, 2, 4, 8):
        dt = np.dtype(f"<u{width}")
        old = rng.integers(0, np.iinfo(dt).max, 1000, dtype=dt, endpoint=True)
        new = rng.integers(0, np.iinfo(dt).max, 1000, dtype=dt, endpoint=True)
        assert np.array_equal(_unzigzag_add(_zigzag_delta(new, old, width), old), new)
