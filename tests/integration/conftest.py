"""Fixtures of the integration tests; the kit itself lives in ``loopkit.py``."""

from loopkit import (  # noqa: F401  (pytest finds fixtures by name)
    admin,
    classifier_onnx,
    keys,
    live_hub,
    loop,
    make_bundle,
    start_device,
)
