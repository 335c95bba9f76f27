"""Property tests of every parser that takes outside bytes (issue 12), on :mod:`fuzz.targets`.

Each target accepts its input or refuses it with the parser's one documented error; anything
else fails the test. Three kinds of input per target: arbitrary bytes, a valid seed with bytes
flipped, cut or inserted, and — for the JSON formats — a valid object with one field replaced
by an arbitrary JSON value (deep, huge numbers, wrong types). Short runs here; long
coverage-guided runs are ``make fuzz`` (atheris).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fuzz.targets import TARGETS, seeds

FAST = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**4000), max_value=10**4000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, name: str) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds(name))))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            data = data[:pos]
    return bytes(data)


NAMES = sorted(TARGETS)


@pytest.mark.parametrize("name", NAMES)
def test_parser_accepts_or_refuses_cleanly_when_given_arbitrary_bytes(name: str) -> None:
    @FAST
    @given(st.binary(max_size=2048))
    def run(data: bytes) -> None:
        TARGETS[name].run(data)

    run()


@pytest.mark.parametrize("name", NAMES)
def test_parser_accepts_or_refuses_cleanly_when_a_valid_input_is_mutated(name: str) -> None:
    for seed in seeds(name):
        TARGETS[name].run(seed)

    @FAST
    @given(mutated(name))
    def run(data: bytes) -> None:
        TARGETS[name].run(data)

    run()


def _json_seed_objects() -> dict[str, list[dict[str, Any]]]:
    return {
        "manifest": [json.loads(s) for s in seeds("manifest")],
        "hub_json": [json.loads(s) for s in seeds("hub_json")],
        "upload": [_payload_meta(s) for s in seeds("upload")],
    }


def _payload_meta(payload: bytes) -> dict[str, Any]:
    from runtime.uploader import decode_payload

    return decode_payload(payload)[0]


def _encode(name: str, obj: Any) -> bytes:
    if name == "upload":
        from runtime.uploader import encode_payload

        return encode_payload(obj, b"img")
    return json.dumps(obj).encode()


@pytest.mark.parametrize("name", ["manifest", "hub_json", "upload", "sample_record"])
def test_parser_refuses_cleanly_when_one_field_of_a_valid_object_has_any_json_value(
    name: str,
) -> None:
    objects = _json_seed_objects()

    @FAST
    @given(st.data())
    def run(data: st.DataObject) -> None:
        source = "upload" if name == "sample_record" else name
        obj = json.loads(json.dumps(data.draw(st.sampled_from(objects[source]))))
        if name == "sample_record":
            obj["image_size"] = 3  # the store's own field
        path_obj = obj
        # Walk down a few levels, then replace one field with an arbitrary value.
        for _ in range(data.draw(st.integers(0, 2))):
            keys = [k for k, v in path_obj.items() if isinstance(v, dict) and v]
            if not keys:
                break
            path_obj = path_obj[data.draw(st.sampled_from(sorted(keys)))]
        key = data.draw(st.sampled_from(sorted(path_obj)) | st.text(max_size=8))
        path_obj[key] = data.draw(json_values)
        if name == "sample_record":
            import struct

            meta = json.dumps(obj).encode()
            blob = struct.pack(">4s8sII", b"LLS2", bytes(8), len(meta), 3) + meta + b"img"
            TARGETS[name].run(blob)
        else:
            TARGETS[name].run(_encode(name, obj))

    run()


def test_tuf_targets_are_refused_when_they_parse_but_have_no_canonical_form() -> None:
    """Found by atheris: a float in signed metadata parses, but canonical JSON has no floats,
    so computing the signed bytes raised SerializationError instead of a TrustError."""
    from runtime.bundle.verify import check_targets
    from runtime.errors import TrustError

    seed = json.loads(seeds("tuf_targets")[0])
    seed["signed"]["x-extra"] = 1.5
    from fuzz.targets import _NOW, _trusted_root

    with pytest.raises(TrustError, match="no canonical form"):
        check_targets(_trusted_root()[0], json.dumps(seed).encode(), _NOW, "targets.json")
    TARGETS["tuf_targets"].run(json.dumps(seed).encode())


@pytest.mark.parametrize(
    "tagged",
    [
        b"!!float f",
        b"!!timestamp x",
        b"!!timestamp 2002-13-45",
        b"!!bool x",
        b"!!int 0x",
        b"!!int ",
    ],
)
def test_yaml_parsers_refuse_cleanly_when_a_tagged_scalar_cannot_be_converted(
    tagged: bytes, tmp_path: Path
) -> None:
    """Found by atheris (with the YAML dictionary): PyYAML's safe constructor lets ValueError,
    AttributeError or KeyError escape for such scalars, which went past every caller that
    catches YAMLError (pipeline.yaml, ontology.yaml, the device config)."""
    from runtime.config import load_config
    from runtime.errors import ConfigError

    for name in ("pipeline", "ontology"):
        TARGETS[name].run(tagged)
        TARGETS[name].run(b"stages:\n- name: " + tagged + b"\n")
    config = tmp_path / "device.yaml"
    config.write_bytes(b"device_id: " + tagged + b"\n")
    with pytest.raises(ConfigError, match="not readable YAML"):
        load_config(config)


def test_yaml_parsers_refuse_a_billion_laughs_when_aliases_expand_past_the_cap() -> None:
    """A 535-byte pipeline.yaml of nested aliases (9 per level, 7 levels) parsed at once but
    stood for 4.8 million values: dumping it took 8 s and 33 MB, one more level 9x that."""
    from runtime.errors import PipelineError
    from runtime.pipeline.graph import load_pipeline_spec

    levels = ["x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
        f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 7)
    ]
    doc = (
        "stages:\n- name: d\n  model: m\n  pre: {resize: [8, 8]}\n  post:\n    type: plugin\n"
        "    function: 'p/x.py:g'\n    params:\n" + "".join(f"      {x}\n" for x in levels)
    ).encode()
    with pytest.raises(PipelineError, match="once aliases are expanded"):
        load_pipeline_spec(doc)
    TARGETS["pipeline"].run(doc)
    TARGETS["ontology"].run(b"id: o\nversion: 1\nclasses: &c [a, *c]\n")  # refers to itself
    shared = (
        b"stages:\n- {name: a, model: m, pre: &p {resize: [8, 8]}, post: {type: softmax}}\n"
        b"- {name: b, model: m, pre: *p, post: {type: softmax}}\n"
    )
    assert len(load_pipeline_spec(shared).stages) == 2  # a plain alias still loads
