-- The annotation queue without scans (hub/storage/queue.py): each sample row carries the key of
-- the group it stands in (its near-duplicate group id from sample_signatures, else its image
-- sha256) and whether it waits for a human's review (an ontology split, or the device asked),
-- both set by the hub when it writes the row, so the queue finds a group's annotated members,
-- its feedback and its best pending member through one index instead of a join per row.
-- signature_state: the backfill's mark on a sample stored before 0013 (NULL: not tried yet;
-- 'none': its image has no signature), so hub/backfill.py never decodes one image twice.
ALTER TABLE samples ADD COLUMN group_key TEXT;
ALTER TABLE samples ADD COLUMN needs_review INTEGER NOT NULL DEFAULT 0;
ALTER TABLE samples ADD COLUMN signature_state TEXT;
UPDATE samples SET group_key = COALESCE(
    (SELECT g.group_id FROM sample_signatures g WHERE g.sample_id = samples.id), image_sha256);
UPDATE samples SET needs_review = 1 WHERE meta_json LIKE '%"needs_review": true%';
UPDATE samples SET signature_state = 'done'
    WHERE id IN (SELECT sample_id FROM sample_signatures);
CREATE INDEX IF NOT EXISTS samples_group ON samples(bundle, group_key, state);
-- The queue's narrow reads are index-only scans of this one.
CREATE INDEX IF NOT EXISTS samples_cover ON samples(bundle, state, group_key, priority, created,
    id, device_id, needs_review, image_sha256);
CREATE INDEX IF NOT EXISTS samples_unsigned ON samples(id) WHERE signature_state IS NULL;
