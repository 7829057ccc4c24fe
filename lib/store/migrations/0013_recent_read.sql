-- Version 13: claiming \Recent (version 8) locks the mailbox row only when there is
-- something to claim. Taking the row lock (FOR UPDATE) gives the statement a transaction id,
-- and its commit then waits for the WAL to reach the disk: every SELECT of a mailbox with no
-- new message paid an fsync for nothing. recent_uid only grows, so a value read without the
-- lock that already covers p_upto is the answer; otherwise the row is locked and read again.
CREATE OR REPLACE FUNCTION postern_claim_recent(p_mailbox bigint, p_upto bigint,
                                                p_claim boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_old bigint;
BEGIN
    SELECT recent_uid INTO v_old FROM mailboxes WHERE id = p_mailbox;
    IF NOT p_claim OR v_old IS NULL OR p_upto <= v_old THEN
        RETURN v_old;
    END IF;
    SELECT recent_uid INTO v_old FROM mailboxes WHERE id = p_mailbox FOR UPDATE;
    IF v_old IS NOT NULL AND p_upto > v_old THEN
        UPDATE mailboxes SET recent_uid = p_upto WHERE id = p_mailbox;
    END IF;
    RETURN v_old;
END $$;
