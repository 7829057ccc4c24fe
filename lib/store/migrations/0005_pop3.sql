-- Version 5: POP3 maildrop locks (RFC 1939 section 8: one session per maildrop at a time),
-- shared by every pop3d replica.
--
-- A lock is a row with an owner id (pop3d instance, session, random part) and a lease:
-- the owning session renews `expires` while it lives, and a lock whose lease has run out
-- may be taken over, so a replica that crashed (or lost its network) blocks a maildrop
-- for at most one lease. A row rather than a PostgreSQL advisory lock: an advisory lock
-- lives as long as a database connection, so it would need one connection per POP3
-- session and would outlive a dead replica until TCP keepalives noticed.

CREATE TABLE pop3_locks (
    user_id  bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    owner    text NOT NULL,
    since    timestamptz NOT NULL,
    expires  timestamptz NOT NULL
);

-- Opening a maildrop in one statement: takes the lock of the user's maildrop (free, or
-- its lease expired) for p_lease seconds and lists the INBOX. Rows: ('no-user'), or
-- ('in-use'), or ('maildrop', user id, INBOX id, UIDVALIDITY) followed by one
-- ('message', uid, size) per message in UID order.
CREATE FUNCTION postern_pop3_open(p_address text, p_owner text, p_lease integer)
RETURNS TABLE (kind text, n1 bigint, n2 bigint, n3 bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_user     bigint;
    v_got      bigint;
    v_mailbox  bigint;
    v_validity bigint;
BEGIN
    SELECT id INTO v_user FROM users WHERE address = p_address;
    IF v_user IS NULL THEN
        RETURN QUERY SELECT 'no-user'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    INSERT INTO pop3_locks AS l (user_id, owner, since, expires)
    VALUES (v_user, p_owner, clock_timestamp(),
            clock_timestamp() + make_interval(secs => p_lease))
    ON CONFLICT (user_id) DO UPDATE
        SET owner = EXCLUDED.owner, since = EXCLUDED.since, expires = EXCLUDED.expires
        WHERE l.expires < clock_timestamp()
    RETURNING l.user_id INTO v_got;
    IF v_got IS NULL THEN
        RETURN QUERY SELECT 'in-use'::text, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    v_mailbox := postern_inbox(v_user);
    SELECT uidvalidity INTO v_validity FROM mailboxes WHERE id = v_mailbox;
    RETURN QUERY SELECT 'maildrop'::text, v_user, v_mailbox, v_validity;
    RETURN QUERY SELECT 'message'::text, m.uid, m.size::bigint, NULL::bigint
                 FROM messages m WHERE m.mailbox_id = v_mailbox ORDER BY m.uid;
END $$;
