"""The hub's configuration: one pydantic model, unknown keys rejected so a typo fails at start."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hub.storage.blobs_s3 import S3Config

__all__ = ["HubConfig", "load_hub_config"]

KiB = 1024
MiB = 1024 * KiB


class HubConfig(BaseModel):
    """Everything ``create_app`` needs; field descriptions double as operator documentation."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(description="hub state: SQLite, blobs, TUF metadata, tokens, jobs")
    database_url: str | None = Field(
        default=None,
        description="postgresql://user@host:port/db for a hub that scales out (several "
        "replicas); none: SQLite in the data dir",
    )
    db_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="worker threads (and connections) of the database; none: 2 for SQLite (one "
        "writer at a time anyway; fewer threads contend less for the GIL), 8 for PostgreSQL",
    )
    s3: S3Config | None = Field(
        default=None, description="blobs in an S3-compatible bucket; none: <data>/blobs"
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate (chain) to serve HTTPS; with tls_key_file"
    )
    tls_key_file: Path | None = Field(
        default=None, description="PEM private key of the certificate"
    )
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8470, ge=0, le=65535, description="TCP port (0: any free port)")
    keys_dir: Path | None = Field(
        default=None,
        description="a `keys init` folder; on first start root.json and the online keys are "
        "copied from it into the data dir (not needed afterwards)",
    )
    timestamp_expiry_s: float = Field(
        default=86400, gt=0, description="life of a timestamp signature; re-signed at half-life"
    )
    snapshot_expiry_s: float = Field(
        default=7 * 86400, gt=0, description="life of a snapshot signature; re-signed at half-life"
    )
    timestamp_check_interval_s: float = Field(
        default=600, gt=0, description="how often the hub checks whether to re-sign timestamp"
    )
    rollout_tick_s: float = Field(
        default=10, gt=0, description="how often staged rollouts are stepped (halts, next waves)"
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a request line and headers must arrive whole within this of their first "
        "byte (or of the connection opening), else the connection is closed (slow headers)",
    )
    body_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a request body that sends nothing for this long is cut (408, closed)",
    )
    body_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="a JSON or multipart body must arrive whole within this (resumable sample "
        "uploads have only the idle limit: devices pace them)",
    )
    cache_check_s: float = Field(
        default=0.5,
        gt=0,
        description="how often each replica reads the change counters of its token and desired "
        "caches: the longest another replica serves a revoked token or an old desired answer",
    )
    heartbeat_flush_s: float = Field(
        default=1.0,
        gt=0,
        description="heartbeats (last seen, status) are written in batches this often: what a "
        "crashed hub may lose of them (devices send them again at their next poll)",
    )
    max_unauthenticated: int = Field(
        default=32,
        ge=1,
        description="requests without a token (enrolment, challenge, refresh) served at once; "
        "more get 503 at once, so slow clients cannot hold every connection",
    )
    fleet_enroll_secret: bool = Field(
        default=True,
        description="accept <data>/enroll.token to enrol new device ids; false: only "
        "admin-minted (one-time or expiring) secrets. It never re-keys an enrolled id",
    )
    trainer_command: list[str] = Field(
        default_factory=lambda: [sys.executable, "-I", "-m", "trainer.job"],
        min_length=1,
        description="command of a training job; --annotations/--images/--out[/--init-from] "
        "are appended",
    )
    job_concurrency: int = Field(
        default=1, ge=1, le=16, description="training jobs run at once (each its own process)"
    )
    job_timeout_s: float | None = Field(
        default=None, gt=0, description="kill a training job after this long (None: never)"
    )
    backfill_batch: int = Field(
        default=200, ge=0, le=10_000,
        description="samples stored without an image signature (before migration 0013) get "
        "theirs at start-up, this many per batch, on the leader (hub/backfill.py); 0: off",
    )  # fmt: skip
    web_session_ttl_s: float = Field(
        default=8 * 3600, gt=0, description="the web page's session ends after this long idle"
    )
    web_claim_ttl_s: float = Field(
        default=15 * 60, gt=0, description="an annotator's claim (lock) on a sample runs out after"
    )
    require_blessing: bool = Field(
        default=False,
        description="refuse to publish or roll out a bundle without a replay blessing unless "
        "forced with a reason (written to the audit log)",
    )
    history_retention_s: float = Field(
        default=90 * 86400, gt=0, description="how long the devices' prediction metadata is kept"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> HubConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    max_blob_bytes: int = Field(default=2048 * MiB, gt=0, description="cap of one uploaded blob")
    max_targets_bytes: int = Field(default=8 * MiB, gt=0, description="cap of targets metadata")
    max_heartbeat_bytes: int = Field(default=64 * KiB, gt=0, description="cap of a heartbeat")
    max_meta_bytes: int = Field(default=256 * KiB, gt=0, description="cap of a sample's meta")
    max_image_bytes: int = Field(default=4 * MiB, gt=0, description="cap of a sample's image")
    max_dataset_bytes: int = Field(
        default=1024 * MiB,
        gt=0,
        description="cap of an imported dataset archive, and of its unpacked size",
    )


def load_hub_config(path: Path | None, overrides: dict[str, Any]) -> HubConfig:
    """A HubConfig from a YAML file (if given) with ``overrides`` on top. Raises ValueError with
    a one-line reason (file unreadable, not YAML, unknown or bad field)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: {e}") from e
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of HubConfig fields")
        data = loaded
    try:
        return HubConfig.model_validate({**data, **overrides})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ValueError(f"{path or 'hub config'}: {where}: {first['msg']}") from e
