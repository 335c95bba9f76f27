"""Fuzz targets: every parser that takes bytes from outside, with the errors it may raise.

A target is a function ``bytes -> None`` that feeds the bytes to one parser and checks what
comes back. Its contract: the parser either returns a value that meets the target's invariants
or raises one of the target's ``expected`` errors (the parser's documented, one-line refusal).
Any other exception — an ``AttributeError`` from a wrong type, a ``RecursionError``, a
``ValueError`` escaping a parser that promises ``BundleError`` — is a bug, and so is a hang.

The same targets serve the Hypothesis property tests (``tests/fuzz/``, short, in the normal
suite) and coverage-guided fuzzing with atheris (``python -m fuzz``, ``make fuzz``). Seeds (one
valid input per target, made here, no downloads) start both from the interesting part of the
input space.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "Target", "dictionary", "seeds"]

_NOW = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    """One parser under fuzz."""

    name: str
    run: Callable[[bytes], None]
    what: str  # the parser, for the report


# ---- the parsers --------------------------------------------------------------------------


def _manifest(data: bytes) -> None:
    from runtime.bundle.loader import parse_manifest
    from runtime.bundle.manifest import check_relative_path
    from runtime.errors import BundleError

    try:
        m = parse_manifest(data)
    except BundleError as e:
        assert "\n" not in str(e), "a refusal must be one line"
        return
    for rel in [*m.files, m.pipeline]:  # whatever parses cannot point outside the bundle
        check_relative_path(rel)
    if m.health is not None:
        assert all(p in m.files for p in [*m.health.inputs, m.health.expected])


def _pipeline(data: bytes) -> None:
    from runtime.errors import PipelineError
    from runtime.pipeline.graph import load_pipeline_spec, plugin_ref_parts

    try:
        spec = load_pipeline_spec(data)
    except PipelineError as e:
        assert "\n" not in str(e), "a refusal must be one line"
        return
    for st in spec.stages:  # a plug-in can only ever name a file of the bundle
        if st.pre.plugin is not None:
            plugin_ref_parts(st.pre.plugin)


def _ontology(data: bytes) -> None:
    from runtime.bundle.build import parse_ontology
    from runtime.errors import BundleError

    try:
        o = parse_ontology(data)
    except BundleError as e:
        assert "\n" not in str(e), "a refusal must be one line"
        return
    assert o.classes and o.version >= 1


@functools.cache
def _trusted_root() -> Any:
    """A root made once per process (keys init in a temp folder), and its keys folder."""
    from tuf.api.metadata import Metadata

    from hub.signing import init_keys

    keys = Path(tempfile.mkdtemp(prefix="leanloop-fuzz-keys-"))
    init_keys(keys)
    return Metadata.from_bytes((keys / "root.json").read_bytes()), keys


def _tuf_targets(data: bytes) -> None:
    """Only the seed's signed content may verify; every change to it must be refused."""
    from tuf.api.metadata import Metadata

    from runtime.bundle.verify import check_targets
    from runtime.errors import TrustError

    root, _keys = _trusted_root()
    try:
        check_targets(root, data, _NOW, "targets.json")
    except TrustError as e:
        assert "\n" not in str(e), "a refusal must be one line"
        return
    # Layout outside the signed part may change (the signature covers canonical JSON of
    # "signed"); the signed content itself must be exactly the seed's.
    got = Metadata.from_bytes(data).signed_bytes
    assert got == Metadata.from_bytes(_signed_targets()).signed_bytes, "changed targets verified"


def _delta(data: bytes) -> None:
    from bsdiff import apply_patch, read_header
    from bsdiff.errors import DeltaError

    with contextlib.suppress(DeltaError):
        read_header(data)
    try:
        out = apply_patch(_DELTA_BASE, data, max_result=1 << 20)
    except DeltaError as e:
        assert "\n" not in str(e)
        return
    assert len(out) <= 1 << 20


def _upload(data: bytes) -> None:
    from runtime.store.record import SampleRecord
    from runtime.upload_payload import decode_payload

    try:
        meta, image = decode_payload(data)
    except ValueError:
        return
    try:
        SampleRecord.from_meta(meta, image)
    except (KeyError, ValueError):
        return


def _sample_record(data: bytes) -> None:
    from runtime.store._codec import _Corrupt, _decode

    try:
        _decode(b"0000000000000001-abcdef01", data)
    except _Corrupt:
        return


def _hub_json(data: bytes) -> None:
    """Every JSON body model of the hub's device-facing routes, as the routes parse them."""
    from pydantic import BaseModel

    from hub.api import identity, uploads
    from hub.api._common import json_object, parse_body
    from hub.errors import BadRequest
    from runtime.protocol import FeedbackRequest, Heartbeat, ShadowTelemetry

    models: list[type[BaseModel]] = [
        identity.EnrollRequest,
        identity.ChallengeRequest,
        identity.RefreshRequest,
        identity.KeyRequest,
        identity.MintRequest,
        ShadowTelemetry,
        FeedbackRequest,
    ]
    for model in models:
        with contextlib.suppress(BadRequest):
            parse_body(model, data, "body")
    try:
        obj = json_object(data, "heartbeat")
        Heartbeat.model_validate(obj)
        uploads._check_meta(obj)
    except BadRequest:
        pass
    except ValueError:  # pydantic's ValidationError: the routes map it to 400
        pass


def _range(data: bytes) -> None:
    from hub.api.tuf import parse_range

    text = data.decode("latin-1")  # what aiohttp hands over for header bytes
    head, _, if_range = text.partition("\n")
    size = 1 + int.from_bytes(hashlib.sha256(data).digest()[:2], "big")
    etag = '"abc"'
    try:
        got = parse_range(head, if_range or None, size, etag)
    except ValueError:
        return
    if got is not None:
        start, end = got
        assert 0 <= start < end <= size, (head[:40], size, got)


_DELTA_BASE = bytes(range(256)) * 64


@functools.cache
def _signed_targets() -> bytes:
    from hub.signing import sign_targets

    _root, keys = _trusted_root()
    data = b"seed target"
    additions = {"digits/1/x": (hashlib.sha256(data).hexdigest(), len(data), None)}
    return sign_targets(None, additions, keys, expires_days=3650)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("manifest", _manifest, "runtime.bundle.loader.parse_manifest"),
        Target("pipeline", _pipeline, "runtime.pipeline.graph.load_pipeline_spec"),
        Target("ontology", _ontology, "runtime.bundle.build.parse_ontology"),
        Target("tuf_targets", _tuf_targets, "runtime.bundle.verify.check_targets"),
        Target("delta", _delta, "bsdiff.read_header + apply_patch"),
        Target("upload", _upload, "runtime.upload_payload.decode_payload + SampleRecord.from_meta"),
        Target("sample_record", _sample_record, "runtime.store._codec._decode"),
        Target("hub_json", _hub_json, "hub route body models (parse_body, json_object)"),
        Target("range", _range, "hub.api.tuf.parse_range"),
    ]
}


# ---- dictionaries -------------------------------------------------------------------------

# YAML's own syntax: tags, anchors, merge keys, block scalars, flow collections, the implicit
# scalars the resolver turns into ints, floats, booleans, nulls and timestamps.
_YAML_WORDS = [
    *("---", "...", "- ", ": ", "? ", "{", "}", "[", "]", ", ", "|", ">", "|-", ">+", "#"),
    *("&a ", "*a", "<<: ", "<<: *a", "!!str ", "!!int ", "!!float ", "!!bool ", "!!null "),
    *("!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!pairs ", "!!seq ", "!!map ", "!x "),
    *("~", "null", "true", "False", "yes", "0x1F", "0o17", "0b101", "1_000", "1e3", ".inf"),
    *("-.Inf", ".nan", "2001-12-14t21:59:43.10-05:00", "2002-12-14", "'", '"', "\\u00e9"),
]


def _model_words(*models: Any) -> list[str]:
    """Every field name (``name: ``) and literal value of pydantic models, nested included."""
    import typing

    words: set[str] = set()
    seen: set[Any] = set()

    def walk(tp: Any) -> None:
        if typing.get_origin(tp) is typing.Literal:
            words.update(str(v) for v in typing.get_args(tp))
        for arg in typing.get_args(tp):
            walk(arg)
        fields = getattr(tp, "model_fields", None)
        if isinstance(tp, type) and fields and tp not in seen:
            seen.add(tp)
            for name, f in fields.items():
                words.add(f"{f.alias or name}: ")
                walk(f.annotation)

    for m in models:
        walk(m)
    return sorted(words)


def dictionary(name: str) -> list[bytes]:
    """libFuzzer dictionary words for a target (its format's keys and syntax), maybe none.

    Text formats parsed by a library whose code is not ours get their structure this way:
    mutations then build YAML that reaches our validators instead of refusals of bad syntax.
    """
    if name == "pipeline":
        from runtime.pipeline.graph import PipelineSpec

        return [w.encode() for w in [*_YAML_WORDS, *_model_words(PipelineSpec)]]
    if name == "ontology":
        from runtime.bundle.manifest import Ontology

        return [w.encode() for w in [*_YAML_WORDS, *_model_words(Ontology)]]
    return []


# ---- seeds --------------------------------------------------------------------------------


@functools.cache
def seeds(name: str) -> list[bytes]:
    """Valid inputs of a target (made here once per process, nothing downloaded)."""
    return _SEEDS[name]()


def _seed_manifest() -> list[bytes]:
    from hub.testing import make_bundle

    root = Path(tempfile.mkdtemp(prefix="leanloop-fuzz-bundle-"))
    return [(make_bundle(root) / "manifest.json").read_bytes()]


def _seed_pipeline() -> list[bytes]:
    from runtime.pipeline import graph

    example = graph.__doc__.split("Example (the demo's digit reader)::")[1] if graph.__doc__ else ""
    text = "\n".join(line[4:] for line in example.splitlines() if line.startswith("    "))
    plugin = (
        "stages:\n- name: d\n  model: m\n  pre: {resize: [8, 8], plugin: 'p/x.py:f'}\n"
        "  post: {type: plugin, function: 'p/x.py:g', params: {a: 1}}\n"
    )
    return [text.encode(), plugin.encode()]


def _seed_ontology() -> list[bytes]:
    return [
        b"id: digits\nversion: 2\nclasses: ['0', '1', '2']\nmapping_from_previous: {seven: '7'}\n"
    ]


def _seed_delta() -> list[bytes]:
    from bsdiff import make_patch

    new = bytearray(_DELTA_BASE)
    new[100:110] = b"0123456789"
    return [make_patch(_DELTA_BASE, bytes(new), codec) for codec in ("auto", "bsdiff4")]


def _sample_meta() -> dict[str, Any]:
    from hub.testing import sample_meta

    return sample_meta("0000000000000001-abcdef01", "cam-1", 0.5)


def _seed_upload() -> list[bytes]:
    from runtime.upload_payload import encode_payload

    return [encode_payload(_sample_meta(), b"\xff\xd8jpeg\xff\xd9")]


def _seed_sample_record() -> list[bytes]:
    import struct

    meta = json.dumps({**_sample_meta(), "image_size": 3}).encode()
    head = struct.pack(">4s8sII", b"LLS2", bytes(8), len(meta), 3)
    return [head + meta + b"img"]


def _seed_hub_json() -> list[bytes]:
    return [
        json.dumps(
            {"device_id": "cam-1", "enroll_token": "x", "public_key": "A" * 43 + "="}
        ).encode(),
        json.dumps({"status": "running", "counters": {"a": 1}}).encode(),
        json.dumps({"feedback": {"kind": "correct", "label": "7"}}).encode(),
        json.dumps(_sample_meta()).encode(),
    ]


def _seed_range() -> list[bytes]:
    return [b"bytes=0-99", b'bytes=5-\n"abc"', b"bytes=10-5"]


_SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "manifest": _seed_manifest,
    "pipeline": _seed_pipeline,
    "ontology": _seed_ontology,
    "tuf_targets": lambda: [_signed_targets()],
    "delta": _seed_delta,
    "upload": _seed_upload,
    "sample_record": _seed_sample_record,
    "hub_json": _seed_hub_json,
    "range": _seed_range,
}
