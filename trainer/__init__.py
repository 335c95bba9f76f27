"""leanloop trainer (hub side): digit data, models, training, ONNX export, bundle source writer.

Imports ``runtime`` so that crops and pre-processing are the device's own; ``runtime`` never
imports this package. Heavy modules (torch) load only when their submodule is imported:
``trainer.data`` is numpy + OpenCV only.

* :mod:`trainer.data` — real MNIST digits, frame composition, the drifting production stream
* :mod:`trainer.stages` — the pipeline stage specs shared by training and ``pipeline.yaml``
* :mod:`trainer.models` — ``DigitDetector`` (YOLOv8-layout output) and ``DigitClassifier``
* :mod:`trainer.train` — ``train_models`` (copy-paste detector data, device-path crops)
* :mod:`trainer.export` — ONNX export verified against onnxruntime
* :mod:`trainer.source` — ``write_bundle_source``
* :mod:`trainer.job` — ``run_training_job`` and the ``python -m trainer.job`` CLI
* :mod:`trainer.evaluate` — recall / accuracy measured the way a device runs
"""

from trainer.errors import TrainerError

__all__ = ["TrainerError"]
