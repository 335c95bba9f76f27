-- Change counters of what the hub's hot device routes cache (hub/fastpath.py): every replica
-- keeps device tokens and desired answers in memory and drops them when a counter moves. The
-- triggers bump the counters in the same transaction as the change, whatever code path writes
-- it, so no writer can forget to. 'tokens': a device token or a named token changed or went;
-- 'desired': a device's desired bundle or cohort, a cohort's rollout or a shadow assignment.
CREATE TABLE IF NOT EXISTS hub_generations (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO hub_generations (name, value) VALUES ('tokens', 0) ON CONFLICT DO NOTHING;
INSERT INTO hub_generations (name, value) VALUES ('desired', 0) ON CONFLICT DO NOTHING;

-- @sqlite
CREATE TRIGGER IF NOT EXISTS gen_device_tokens AFTER UPDATE OF token_hash ON devices BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'tokens';
END;
CREATE TRIGGER IF NOT EXISTS gen_device_desired
AFTER UPDATE OF desired_bundle, desired_version, cohort ON devices BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'desired';
END;
CREATE TRIGGER IF NOT EXISTS gen_device_gone AFTER DELETE ON devices BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name IN ('tokens', 'desired');
END;
CREATE TRIGGER IF NOT EXISTS gen_api_tokens_update AFTER UPDATE ON api_tokens BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'tokens';
END;
CREATE TRIGGER IF NOT EXISTS gen_api_tokens_delete AFTER DELETE ON api_tokens BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'tokens';
END;
CREATE TRIGGER IF NOT EXISTS gen_cohorts_insert AFTER INSERT ON cohorts BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'desired';
END;
CREATE TRIGGER IF NOT EXISTS gen_cohorts_update AFTER UPDATE ON cohorts BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'desired';
END;
CREATE TRIGGER IF NOT EXISTS gen_cohorts_delete AFTER DELETE ON cohorts BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'desired';
END;
CREATE TRIGGER IF NOT EXISTS gen_shadow_insert AFTER INSERT ON shadow_rollouts BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'desired';
END;
CREATE TRIGGER IF NOT EXISTS gen_shadow_update AFTER UPDATE ON shadow_rollouts BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'desired';
END;
CREATE TRIGGER IF NOT EXISTS gen_shadow_delete AFTER DELETE ON shadow_rollouts BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = 'desired';
END;

-- @postgresql
CREATE OR REPLACE FUNCTION leanloop_bump_generation() RETURNS trigger AS $$
BEGIN
    UPDATE hub_generations SET value = value + 1 WHERE name = TG_ARGV[0];
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER gen_device_tokens AFTER UPDATE OF token_hash OR DELETE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION leanloop_bump_generation('tokens');
CREATE TRIGGER gen_device_desired
    AFTER UPDATE OF desired_bundle, desired_version, cohort OR DELETE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION leanloop_bump_generation('desired');
CREATE TRIGGER gen_api_tokens AFTER UPDATE OR DELETE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION leanloop_bump_generation('tokens');
CREATE TRIGGER gen_cohorts AFTER INSERT OR UPDATE OR DELETE ON cohorts
    FOR EACH STATEMENT EXECUTE FUNCTION leanloop_bump_generation('desired');
CREATE TRIGGER gen_shadow AFTER INSERT OR UPDATE OR DELETE ON shadow_rollouts
    FOR EACH STATEMENT EXECUTE FUNCTION leanloop_bump_generation('desired');
