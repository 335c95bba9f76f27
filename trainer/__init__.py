"""leanloop trainer (hub side): spec-driven training for any task, export, bundle sources.

Imports ``runtime`` so that crops and pre-processing are the device's own; ``runtime`` never
imports this package. Heavy modules (torch) load only when their submodule is imported:
``trainer.data`` is numpy + OpenCV only.

The training service (``docs/training.md``):

* :mod:`trainer.spec` — the training spec (``leanloop.train/1``)
* :mod:`trainer.datasets` — the one dataset model (:mod:`trainer.datasets.model`), the native
  folder the tasks read (``dataset.json``, :mod:`trainer.datasets.native`), formats in and out
* :mod:`trainer.tasks` — ``classify``, ``detect``, ``detect_then_classify``
* :mod:`trainer.arch` — torchvision MobileNetV3 / ResNet classifiers, the FCOS-style detector
* :mod:`trainer.engine` — the shared loop: device, augmentation, class weights, early stopping
* :mod:`trainer.search` — Optuna search with pruning
* :mod:`trainer.warm` — warm start from a state dict or an ONNX model (onnx2torch)
* :mod:`trainer.card` — the model card
* :mod:`trainer.run` — ``run_spec`` and ``python -m trainer.run`` (the hub's spec jobs)
* :mod:`trainer.synthetic` — small local datasets (digits, digit frames, shapes)

The demo's digit reader (its own trainer, run by hub jobs without a spec):

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
