-- A secret shared by every replica: it seeds the made-up SCRAM salts shown for unknown
-- users (so they look the same on every replica and across restarts) and keys the
-- digests of failed login attempts. gen_random_uuid() draws from a strong source.
INSERT INTO settings (scope, scope_id, key, value)
VALUES ('system', 0, 'internal.secret',
        replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''))
ON CONFLICT DO NOTHING;
