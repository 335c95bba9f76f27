"""docs/pipeline.md stays true: every ``pre``/``post`` example in it parses, and every key of
the pipeline models is documented there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from runtime.pipeline.graph import (
    Anchors,
    ClassifyPost,
    CropSpec,
    PipelineSpec,
    PluginPost,
    PreSpec,
    SsdPost,
    StageSpec,
    TfliteSsdPost,
    YoloPost,
    parse_pipeline_spec,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "pipeline.md"


def _examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    out = []
    for block in blocks:
        data = yaml.safe_load(block)
        if isinstance(data, dict) and "post" in data:
            out.append(data)
        # a block may hold several examples separated by comments and repeated keys
        for part in re.split(r"\n(?=# )", block)[1:]:
            more = yaml.safe_load(part)
            if isinstance(more, dict) and "post" in more and more not in out:
                out.append(more)
    return out


def test_every_example_of_the_pipeline_doc_parses_when_put_in_a_stage() -> None:
    examples = _examples()
    kinds = {e["post"]["type"] for e in examples}
    assert kinds == {"softmax", "yolo_v8", "yolo_v5", "tflite_ssd", "ssd", "plugin"}
    for e in examples:
        stage = {
            "name": "s",
            "model": "m",
            "pre": e.get("pre", {"resize": [8, 8]}),
            "post": e["post"],
        }
        parse_pipeline_spec({"stages": [stage]})


def test_every_pipeline_key_is_documented_when_the_models_change() -> None:
    text = DOC.read_text()
    models: list[type[BaseModel]] = [
        PipelineSpec, StageSpec, PreSpec, CropSpec, ClassifyPost, YoloPost, SsdPost,
        TfliteSsdPost, PluginPost, Anchors,
    ]  # fmt: skip
    missing = [
        f"{m.__name__}.{key}"
        for m in models
        for key in m.model_fields
        if not re.search(rf"(^|\s|`){key}(:|`)", text, flags=re.M)
    ]
    assert not missing, missing
