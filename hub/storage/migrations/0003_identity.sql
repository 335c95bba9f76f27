-- Device identity (hub/storage/identity.py): each device's registered ed25519 public key, a key
-- waiting for an admin's approval, whether an admin reset it, the issue time of the last
-- challenge it used; and admin-minted enrolment secrets (by sha256), one-time or expiring.
CREATE TABLE IF NOT EXISTS device_keys (
    device_id TEXT PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    public_key TEXT,
    pending_key TEXT,
    reset INTEGER NOT NULL DEFAULT 0,
    refresh_issued REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS enroll_secrets (
    secret_hash TEXT PRIMARY KEY,
    uses_left INTEGER NOT NULL,
    expires REAL NOT NULL,
    cohort TEXT,
    created REAL NOT NULL
);
