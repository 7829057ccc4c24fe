-- Version 8: \Recent (RFC 3501 section 2.3.2) across replicas. A message is \Recent for the
-- one session that is first told about it: mailboxes.recent_uid is the highest UID some
-- session has claimed so; a session that selects the mailbox (or learns of new messages)
-- claims the UIDs above it up to what it has seen, in one statement under the mailbox
-- row's lock. EXAMINE only looks (section 6.3.2: it must not take \Recent away).

ALTER TABLE mailboxes ADD COLUMN recent_uid bigint NOT NULL DEFAULT 0;
-- Messages stored before this version are nobody's recent ones.
UPDATE mailboxes SET recent_uid = uidnext - 1;

-- Returns the highest UID claimed before this call (NULL when the mailbox is gone); with
-- p_claim, UIDs up to p_upto are claimed.
CREATE FUNCTION postern_claim_recent(p_mailbox bigint, p_upto bigint, p_claim boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_old bigint;
BEGIN
    IF NOT p_claim THEN
        SELECT recent_uid INTO v_old FROM mailboxes WHERE id = p_mailbox;
        RETURN v_old;
    END IF;
    SELECT recent_uid INTO v_old FROM mailboxes WHERE id = p_mailbox FOR UPDATE;
    IF v_old IS NOT NULL AND p_upto > v_old THEN
        UPDATE mailboxes SET recent_uid = p_upto WHERE id = p_mailbox;
    END IF;
    RETURN v_old;
END $$;
