-- Version 4: the notifier's one statement. An alert mail is stored (INBOX copies and/or
-- one outbound queue entry, through postern_deliver) and recorded in `alerts` together,
-- at most once per cause and subject within an interval, even with several notifiers.

CREATE INDEX alerts_cause_subject_at ON alerts (cause, subject, at);

-- Returns -1 when an alert with the same cause and subject was recorded less than
-- p_interval seconds ago (nothing is stored); otherwise the number of local copies stored.
-- The advisory lock makes concurrent notifiers take turns per (cause, subject); the check
-- runs after the lock, with a fresh snapshot, so a turn sees what the previous one stored.
CREATE FUNCTION postern_alert(p_cause text, p_subject text, p_interval integer,
                              p_detail text, p_queue_id text, p_sender text,
                              p_local text[], p_local_raw bytea,
                              p_relay text[], p_relay_raw bytea)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('postern.alert/' || p_cause || '/'
                                                   || p_subject, 0));
    IF EXISTS (SELECT 1 FROM alerts
               WHERE cause = p_cause AND subject = p_subject
                 AND at > clock_timestamp() - make_interval(secs => p_interval)) THEN
        RETURN -1;
    END IF;
    n := postern_deliver(p_queue_id, p_sender, coalesce(p_local, '{}'), p_local_raw,
                         coalesce(p_relay, '{}'), p_relay_raw);
    INSERT INTO alerts (at, cause, subject, detail, recipients)
    VALUES (clock_timestamp(), p_cause, p_subject, p_detail,
            coalesce(p_local, '{}') || coalesce(p_relay, '{}'));
    RETURN n;
END $$;
