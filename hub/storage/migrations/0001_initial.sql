-- The schema as it stood when migrations began (every statement is IF NOT EXISTS, so a hub
-- data dir from before applies it as a no-op).

-- devices
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    cohort TEXT,
    token_hash TEXT NOT NULL UNIQUE,
    desired_bundle TEXT,
    desired_version INTEGER,
    status_json TEXT,
    last_seen REAL
);
CREATE INDEX IF NOT EXISTS devices_cohort ON devices(cohort);
CREATE TABLE IF NOT EXISTS device_events (
    device_id TEXT NOT NULL,
    id TEXT NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    event_json TEXT NOT NULL,
    PRIMARY KEY (device_id, id)
);
CREATE TABLE IF NOT EXISTS cohorts (
    name TEXT PRIMARY KEY,
    desired_bundle TEXT NOT NULL,
    desired_version INTEGER NOT NULL
);

-- shadow
CREATE TABLE IF NOT EXISTS shadow_rollouts (
    scope TEXT NOT NULL CHECK (scope IN ('device', 'cohort', 'fleet')),
    name TEXT NOT NULL,
    bundle TEXT NOT NULL,
    version INTEGER NOT NULL,
    rule_json TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (scope, name)
);
CREATE TABLE IF NOT EXISTS shadow_reports (
    device_id TEXT PRIMARY KEY,
    bundle TEXT,
    version INTEGER,
    status TEXT,
    report_json TEXT NOT NULL,
    updated REAL NOT NULL
);

-- samples
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY,
    bundle TEXT NOT NULL,
    device_id TEXT NOT NULL,
    priority REAL NOT NULL,
    meta_json TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'annotated')),
    annotation_json TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_queue ON samples(bundle, state, priority DESC, created);
CREATE TABLE IF NOT EXISTS sample_feedback (
    sample_id TEXT PRIMARY KEY REFERENCES samples(id),
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('confirm', 'correct')),
    label TEXT,
    predicted TEXT NOT NULL,
    feedback_json TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_image ON samples(image_sha256);

-- bundles
CREATE TABLE IF NOT EXISTS bundles (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest_json TEXT NOT NULL,
    published REAL NOT NULL,
    PRIMARY KEY (name, version)
);

-- jobs
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    params TEXT NOT NULL,
    error TEXT,
    log_path TEXT,
    artifact_path TEXT,
    created REAL NOT NULL
);
