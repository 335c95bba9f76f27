"""The device configuration (YAML), validated; unknown keys are rejected.

Every field has a default that works, so a device runs with no file at all except where a
value is site-specific (hub URL, pinned root). Field descriptions double as operator docs:
``leanloop device config-schema`` prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runtime._limits import MAX_CONFIG_BYTES, TooLargeError, read_bounded, safe_yaml
from runtime.errors import ConfigError, first_line
from runtime.sampling.close_to_threshold import CloseToThresholdOptions
from runtime.sampling.novelty import NoveltyOptions
from runtime.sampling.rare_class import RareClassOptions
from runtime.sampling.rules import RulesOptions
from runtime.sinks import AnySinkSettings
from runtime.sources import AnySourceSettings, FolderSourceSettings

__all__ = [
    "ClassQuota",
    "DeviceConfig",
    "DownloadSettings",
    "HubSettings",
    "InferenceSettings",
    "MetricsSettings",
    "SamplingSettings",
    "ShadowSettings",
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
    fallback_urls: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="other replicas of the same hub, tried in turn when the current one is down",
    )
    enroll_token: str | None = Field(default=None, description="fleet enrollment secret")
    enroll_token_file: Path | None = Field(default=None, description="file holding the secret")
    cohort: str | None = Field(default=None, description="cohort to join at enrollment")
    poll_interval_s: float = Field(default=30.0, gt=0, description="desired-bundle check period")
    timeout_s: float = Field(default=10.0, gt=0)


# The frame source: one settings model per source type, in runtime/sources/ (``type`` picks
# one; no ``type`` means ``folder``). ``SourceSettings`` is the folder source's, as before.
SourceSettings = FolderSourceSettings


class SinkSettings(_Strict):
    type: Literal["jsonl", "none"] = "jsonl"
    path: Path | None = Field(default=None, description="default: <state_dir>/results.jsonl")


class InferenceSettings(_Strict):
    backend: list[str] = Field(
        default_factory=lambda: ["onnxruntime", "litert", "openvino"],
        description="engines in order of preference (onnxruntime, openvino, litert; one name "
        "is a list of one): each model runs on the first that is installed and has a file "
        "for it, unless its stage pins an engine",
    )
    threads: int = Field(default=0, ge=0, description="engine threads; 0: engine default")

    @field_validator("backend", mode="before")
    @classmethod
    def _one_or_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("backend")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from runtime.bundle.engines import preference
        from runtime.errors import BackendError

        try:
            return list(preference(v))
        except BackendError as e:
            raise ValueError(str(e)) from None

    max_frame_pixels: int = Field(
        default=8192 * 8192,
        gt=0,
        description="a frame whose header declares more pixels is refused before decoding",
    )


class ClassQuota(_Strict):
    max_share: float | None = Field(
        default=None, gt=0, le=1, description="largest share of store.max_bytes for the class"
    )
    max_count: int | None = Field(default=None, ge=0, description="most samples of the class")


class StoreSettings(_Strict):
    max_bytes: int = Field(
        default=64 << 20,
        gt=0,
        description="hard cap of the sample store's disk use (LMDB file), reserve included",
    )
    encoding: Literal["jpeg", "png"] = Field(default="jpeg", description="image encoding")
    jpeg_quality: int = Field(default=90, ge=1, le=100)
    png_compression: int = Field(default=3, ge=0, le=9, description="zlib level for png")
    queue_size: int = Field(default=64, ge=1, description="frames waiting to be scored/stored")
    min_priority: float = Field(default=0.0, ge=0, description="samples below are not kept")
    quotas: dict[str, ClassQuota] = Field(
        default_factory=dict,
        description='final class -> quota; "*" applies to every class not named. At insert, '
        "an over-quota class loses its lowest-priority sample",
    )
    random_slice: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="share of write slots (of frames, with max_rate 0) given to a frame drawn "
        "uniformly at random, kept whatever its score, for unbiased evaluation",
    )
    max_rate: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="frames encoded and stored per second at most; each 1/max_rate s slot "
        "writes its highest-priority frame (or its random pick). 0: every frame that passes "
        "(each costs a JPEG encode and a disk write on the frame path's cores and the flash)",
    )
    sync: Literal["full", "data"] = Field(
        default="full",
        description="full: two disk syncs per commit; data: one (LMDB NOMETASYNC) - a power "
        "cut may undo the last commit, never corrupts",
    )
    random_slice_share: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="share of max_bytes reserved for the random slice (oldest goes first)",
    )


class SamplingSettings(_Strict):
    weights: dict[str, float] = Field(
        default_factory=lambda: {"margin": 1.0}, description="strategy name -> weight"
    )
    reducer: Literal["min", "mean", "max"] = Field(
        default="max", description="how per-detection uncertainties combine per frame"
    )
    seed: int = 0
    close_to_threshold: CloseToThresholdOptions = Field(default_factory=CloseToThresholdOptions)
    rules: RulesOptions = Field(default_factory=RulesOptions)
    novelty: NoveltyOptions = Field(default_factory=NoveltyOptions)
    rare_class: RareClassOptions = Field(default_factory=RareClassOptions)

    @model_validator(mode="after")
    def _known_strategies(self) -> SamplingSettings:
        from runtime.sampling import make_scorer

        try:
            make_scorer(self.weights, self.reducer, self.seed, self.strategy_options())
        except ConfigError as e:
            raise ValueError(str(e)) from e
        return self

    def strategy_options(self) -> dict[str, dict[str, Any]]:
        """Per-strategy option sections, as :func:`runtime.sampling.make_scorer` takes them."""
        return {
            "close_to_threshold": self.close_to_threshold.model_dump(),
            "rules": self.rules.model_dump(),
            "novelty": self.novelty.model_dump(),
            "rare_class": self.rare_class.model_dump(),
        }


class UploadSettings(_Strict):
    """When, how much and how fast samples go to the hub (see docs/operations.md, "Upload")."""

    interval_s: float = Field(default=10.0, gt=0, description="seconds between upload cycles")
    batch: int = Field(default=32, ge=1, description="samples finished per cycle at most")
    byte_budget_per_cycle: int | None = Field(
        default=None, ge=1, description="bytes sent per cycle at most (none: no cap)"
    )
    only_when_idle_s: float = Field(
        default=0.0, ge=0, description="upload only after the source was idle this long"
    )
    windows: list[str] = Field(
        default_factory=list,
        description='local-time windows when uploads may run, "HH:MM-HH:MM" (may cross '
        'midnight, e.g. "22:00-06:00"); empty: any time',
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone of the windows and of the daily budget's midnight (e.g. "
        '"Europe/Paris"); none: the system\'s local time',
    )
    daily_budget_bytes: int | None = Field(
        default=None,
        ge=1,
        description="bytes the uploader may put on the link per local day, requests included; "
        "persisted across restarts, reset at local midnight (none: no cap)",
    )
    rate_bps: float | None = Field(
        default=None, gt=0, description="upload rate cap in bytes/s, a token bucket (none: no cap)"
    )
    burst_bytes: int = Field(
        default=64 * 1024, ge=1024, description="token bucket depth of the rate cap, in bytes"
    )
    part_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="a sample goes in resumable parts of at most this many bytes; a dropped "
        "link loses at most the part in flight, and the hub keeps what it received",
    )

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, v: list[str]) -> list[str]:
        from runtime.upload_policy import parse_window

        for w in v:
            parse_window(w)  # raises ValueError with a one-line reason
        return v

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError) as e:
                raise ValueError(f"unknown time zone {v!r}") from e
        return v


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


class DownloadSettings(_Strict):
    """How target files (bundle files, deltas) are downloaded: see :mod:`runtime.download`."""

    rate_limit_bps: int = Field(
        default=0, ge=0, description="cap on download bytes per second (token bucket); 0: none"
    )
    max_attempts: int = Field(
        default=6,
        ge=1,
        description="attempts in a row that bring no new byte before a download gives up "
        "(the partial file is kept for the next try)",
    )
    backoff_base_s: float = Field(
        default=0.5, gt=0, description="first retry waits up to this long (full jitter)"
    )
    backoff_max_s: float = Field(
        default=30.0, gt=0, description="the wait before a retry doubles up to this cap"
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="TCP connect timeout")
    read_timeout_s: float = Field(
        default=30.0, gt=0, description="a connection silent this long is dropped and retried"
    )
    chunk_bytes: int = Field(
        default=64 << 10, ge=1024, description="largest read from the socket at a time"
    )
    partial_max_age_s: float = Field(
        default=86400.0,
        ge=0,
        description="partial downloads of files no longer wanted are deleted once untouched "
        "this long",
    )


class ShadowSettings(_Strict):
    """Shadow-mode A/B: a candidate bundle the hub assigns runs beside production, never serving."""

    enabled: bool = Field(default=True, description="accept shadow candidates from the hub")
    queue_size: int = Field(
        default=4, ge=1, description="frames waiting for the candidate; more are shed and counted"
    )
    frame_timeout_s: float = Field(
        default=5.0, gt=0, description="a candidate frame slower than this is a hang: disabled"
    )
    load_timeout_s: float = Field(
        default=120.0, gt=0, description="time for the worker to load and health-check it"
    )
    max_error_rate: float = Field(
        default=0.2, ge=0, le=1, description="candidate error rate that disables it"
    )
    error_min_frames: int = Field(
        default=20, ge=1, description="answers needed before the error rate is judged"
    )
    nice: int = Field(default=10, ge=0, le=19, description="OS niceness added to the worker")
    max_duty: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="most of the wall time the candidate may be busy (a frame that took t is "
        "followed by a rest of t*(1/max_duty - 1)); 1: no cap. Niceness alone does not keep a "
        "candidate on an SMT sibling or shared core from slowing production",
    )
    threads: int = Field(default=1, ge=0, description="candidate engine threads; 0: default")
    iou_threshold: float = Field(
        default=0.5, gt=0, le=1, description="IoU at which two boxes are the same object"
    )
    store_disagreements: bool = Field(
        default=True, description="offer frames the models disagree on to the sample store"
    )
    report_interval_s: float = Field(
        default=5.0, gt=0, description="how often shadow.json is written and sent to the hub"
    )


class MetricsSettings(_Strict):
    """Prometheus metrics (``leanloop device metrics`` reads them through the control socket)."""

    textfile: Path | None = Field(
        default=None,
        description="also write them to this file for node_exporter's textfile collector "
        "(e.g. <state_dir>/metrics/leanloop.prom; outside the state folder the unit needs "
        "ReadWritePaths=); none: no file",
    )
    interval_s: float = Field(default=15.0, gt=0, description="how often the textfile is written")


class DeviceConfig(_Strict):
    """``leanloop device run --config FILE``."""

    device_id: str = Field(default="device", min_length=1, max_length=128)
    state_dir: Path = Field(default=Path("/var/lib/leanloop"))
    root: Path | None = Field(default=None, description="pinned TUF root.json of the fleet")
    hub: HubSettings = Field(default_factory=HubSettings)
    source: AnySourceSettings = Field(
        default_factory=FolderSourceSettings,
        description="where frames come from: folder | video | rtsp | mjpeg | v4l2",
    )
    sink: SinkSettings = Field(default_factory=SinkSettings)
    sinks: list[AnySinkSettings] = Field(
        default_factory=list, description="more places results go: webhook, mqtt"
    )
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    upload: UploadSettings = Field(default_factory=UploadSettings)
    update: UpdateSettings = Field(default_factory=UpdateSettings)
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    status_interval_s: float = Field(default=1.0, gt=0)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)


def load_config(path: Path | None) -> DeviceConfig:
    """Read and validate a device config. Raises ConfigError naming the file and the key.

    The inference engines are checked here too (an unknown name, or none installed), so a
    device refuses such a config before it touches any slot: a typo in ``inference.backend``
    must never make it mark a bundle bad for failing to load.
    """
    from runtime.config_check import engine_problems

    if path is None:
        cfg = DeviceConfig()
        problems = engine_problems(cfg.inference.backend)
        if problems:
            raise ConfigError(f"inference.backend: {problems[0]}")
        return cfg
    try:
        data = safe_yaml(read_bounded(path, MAX_CONFIG_BYTES)) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file") from e
    except TooLargeError as e:
        raise ConfigError(str(e)) from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not readable YAML: {first_line(e)}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    inference = data.get("inference")
    backend = inference.get("backend") if isinstance(inference, dict) else None
    # The engine check first: a typo there is said with "did you mean", and an engine that is
    # not installed is refused before the service touches any slot.
    found = [f"inference.backend: {p}" for p in engine_problems(backend)]
    try:
        cfg = DeviceConfig.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(str(x) for x in err["loc"])
            if found and loc[:2] == ("inference", "backend"):
                continue  # already said above
            found.append(f"{'.'.join(loc)}: {err['msg']}")
    if found:
        more = len(found) - 1
        hint = f" (and {more} more: leanloop config check {path})" if more else ""
        raise ConfigError(f"{path}: {found[0]}{hint}")
    return cfg
