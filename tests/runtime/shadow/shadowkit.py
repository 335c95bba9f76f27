"""Build real bundles for the shadow tests (not a test module).

The production bundle is the integration kit's two-stage pipeline (a constant-box YOLOv8-layout
detector, then the torch-exported brightness classifier on each box). Candidates vary it: the
same models under a new version (identical), the ontology with two labels swapped (a candidate
that confuses exactly those two classes), or a ``pre`` plug-in from ``shadow_plugins`` on the
detector stage that misbehaves on poison frames.
"""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "integration"))
sys.path.insert(0, str(HERE))
from loopkit import PIPELINE, painted_frame, write_source  # noqa: E402

from runtime.bundle.build import build_bundle  # noqa: E402

BOXES = [(25.0, 25.0, 30.0, 30.0), (70.0, 70.0, 40.0, 40.0)]
CLASSES = [str(i) for i in range(10)]


def frame(levels: tuple[int, int] = (60, 200)) -> np.ndarray:
    """96×96 frame, two patches read as classes round(9 * level / 255): (60, 200) -> 2, 7.
    A first level of 250+ makes it a poison frame for ``shadow_plugins``."""
    return painted_frame(levels)


def png(levels: tuple[int, int] = (60, 200)) -> bytes:
    ok, buf = cv2.imencode(".png", frame(levels))
    assert ok
    return buf.tobytes()


def build(
    root: Path,
    classifier: Path,
    version: int,
    *,
    plugin: str | None = None,
    swap: tuple[str, str] | None = None,
    name: str = "digits",
) -> Path:
    """A built bundle ``<root>/bundle-v<version>``: the integration kit's source, with
    ``plugin`` as the detector's pre plug-in and ``swap`` exchanging two ontology labels."""
    src = write_source(root / f"src-v{version}", BOXES, classifier)
    if plugin is not None:
        pipe = copy.deepcopy(PIPELINE)
        pipe["stages"][0]["pre"]["plugin"] = f"plugins/shadow_plugins.py:{plugin}"
        (src / "pipeline.yaml").write_text(yaml.safe_dump(pipe))
        (src / "plugins").mkdir()
        shutil.copyfile(HERE / "shadow_plugins.py", src / "plugins" / "shadow_plugins.py")
    if swap is not None:
        classes = list(CLASSES)
        i, j = classes.index(swap[0]), classes.index(swap[1])
        classes[i], classes[j] = classes[j], classes[i]
        (src / "ontology.yaml").write_text(
            yaml.safe_dump({"id": "digits", "version": 1, "classes": classes})
        )
    out = root / f"bundle-v{version}"
    build_bundle(src, out, name=name, version=version)
    return out
