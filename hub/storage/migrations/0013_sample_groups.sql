-- Hub-side ranking across devices (hub/ranking.py): each decodable sample image's signature
-- (64-bit perceptual hash as 16 hex digits, its size, the 8x8 tiny image as base64 float16)
-- and the near-duplicate group it joined (the id of the group's first sample). The hash's 8
-- bytes are indexed in sample_hash_bands, so a new image finds its near duplicates without a
-- scan. Samples without a row (a payload Pillow cannot decode, or stored before this
-- migration) are grouped by their exact image sha256, as before.
CREATE TABLE IF NOT EXISTS sample_signatures (
    sample_id TEXT PRIMARY KEY REFERENCES samples(id),
    bundle TEXT NOT NULL,
    phash TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    feature TEXT NOT NULL,
    group_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sample_signatures_group ON sample_signatures(bundle, group_id);
CREATE TABLE IF NOT EXISTS sample_hash_bands (
    bundle TEXT NOT NULL,
    band INTEGER NOT NULL,
    value INTEGER NOT NULL,
    sample_id TEXT NOT NULL REFERENCES samples(id),
    PRIMARY KEY (bundle, band, value, sample_id)
);
