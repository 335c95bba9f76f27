"""The device configuration (YAML), validated; unknown keys are rejected.

Every field has a default that works, so a device runs with no file at all except where a
value is site-specific (hub URL, pinned root). Field descriptions double as operator docs:
``leanloop device config-schema`` prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.errors import ConfigError

__all__ = [
    "DeviceConfig",
    "HubSettings",
    "InferenceSettings",
    "SamplingSettings",
    "SinkSettings",
    "SourceSettings",
    "StoreSettings",
    "UpdateSettings",
    "UploadSettings",
    "load_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HubSettings(_Strict):
    url: str | None = Field(default=None, description="hub base URL; none: run offline")
    enroll_token: str | None = Field(default=None, description="fleet enrollment secret")
    enroll_token_file: Path | None = Field(default=None, description="file holding the secret")
    cohort: str | None = Field(default=None, description="cohort to join at enrollment")
    poll_interval_s: float = Field(default=30.0, gt=0, description="desired-bundle check period")
    timeout_s: float = Field(default=10.0, gt=0)


class SourceSettings(_Strict):
    type: Literal["folder"] = "folder"
    path: Path = Field(default=Path("/var/lib/leanloop/inbox"), description="image folder")
    pattern: str = Field(default="*", description="glob of frame files, in name order")
    poll_interval_s: float = Field(default=0.2, gt=0)
    fps_limit: float = Field(default=0.0, ge=0, description="0: as fast as frames come")


class SinkSettings(_Strict):
    type: Literal["jsonl", "none"] = "jsonl"
    path: Path | None = Field(default=None, description="default: <state_dir>/results.jsonl")


class InferenceSettings(_Strict):
    backend: str = Field(default="onnxruntime", description="onnxruntime | openvino | litert")
    threads: int = Field(default=0, ge=0, description="engine threads; 0: engine default")


class StoreSettings(_Strict):
    max_bytes: int = Field(default=64 << 20, gt=0, description="hard cap of the sample store")
    jpeg_quality: int = Field(default=90, ge=1, le=100)
    queue_size: int = Field(default=64, ge=1, description="frames waiting to be scored/stored")
    min_priority: float = Field(default=0.0, ge=0, description="samples below are not kept")


class SamplingSettings(_Strict):
    weights: dict[str, float] = Field(
        default_factory=lambda: {"margin": 1.0}, description="strategy name -> weight"
    )
    reducer: Literal["min", "mean", "max"] = Field(
        default="max", description="how per-detection uncertainties combine per frame"
    )
    seed: int = 0


class UploadSettings(_Strict):
    interval_s: float = Field(default=10.0, gt=0)
    batch: int = Field(default=32, ge=1)
    byte_budget_per_cycle: int | None = Field(default=None, ge=1)
    only_when_idle_s: float = Field(
        default=0.0, ge=0, description="upload only after the source was idle this long"
    )


class UpdateSettings(_Strict):
    trial_frames: int = Field(default=20, ge=0, description="frames before a commit")
    trial_s: float = Field(
        default=60.0,
        ge=0,
        description="the trial also ends after this long, judged on the frames it saw (a "
        "device without frames commits on its health check alone)",
    )
    trial_max_error_rate: float = Field(default=0.2, ge=0, le=1)
    max_crash_restarts: int = Field(
        default=3,
        ge=0,
        description="restarts that may interrupt the same update before it is marked bad",
    )


class DeviceConfig(_Strict):
    """``leanloop device run --config FILE``."""

    device_id: str = Field(default="device", min_length=1, max_length=128)
    state_dir: Path = Field(default=Path("/var/lib/leanloop"))
    root: Path | None = Field(default=None, description="pinned TUF root.json of the fleet")
    hub: HubSettings = Field(default_factory=HubSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    sink: SinkSettings = Field(default_factory=SinkSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    upload: UploadSettings = Field(default_factory=UploadSettings)
    update: UpdateSettings = Field(default_factory=UpdateSettings)
    status_interval_s: float = Field(default=1.0, gt=0)


def load_config(path: Path | None) -> DeviceConfig:
    """Read and validate a device config. Raises ConfigError naming the file and the key."""
    if path is None:
        return DeviceConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not readable YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{path}: {loc}: {first['msg']}") from e
