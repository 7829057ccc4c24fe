-- Version 15: storing accepted messages costs less, and several can share one transaction
-- (smtpd's group commit).
--
-- postern_deliver takes a message's UID and its modseq in one UPDATE of the mailbox row, and
-- gives the modseq to the INSERT: the modseq trigger (postern_modseq: a SELECT ... FOR
-- UPDATE, a DELETE of old expunge records, a second UPDATE of the same row) no longer runs
-- for it. The rule is postern_modseq's: one modseq per transaction and mailbox, the
-- transaction's id kept in modseq_xid. The trigger now runs only for an INSERT that leaves
-- modseq to it (the default, 0): every other writer. Expunge records older than 30 days are
-- still dropped by the next flag change or expunge in their mailbox (delivery creates none).
ALTER TABLE messages ALTER COLUMN modseq SET DEFAULT 0;
DROP TRIGGER messages_modseq_insert ON messages;
CREATE TRIGGER messages_modseq_insert BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.modseq = 0) EXECUTE FUNCTION postern_messages_modseq();

CREATE OR REPLACE FUNCTION postern_deliver(p_queue_id text, p_sender text, p_local text[],
                                           p_local_raw bytea, p_relay text[], p_relay_raw bytea)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    u   record;
    mb  bigint;
    uid bigint;
    seq bigint;
    cur bigint;
    n   integer := 0;
BEGIN
    FOR u IN SELECT id FROM users WHERE address = ANY (p_local) ORDER BY id LOOP
        mb := postern_inbox(u.id);
        cur := txid_current();
        UPDATE mailboxes
        SET uidnext = uidnext + 1,
            highestmodseq = highestmodseq + (modseq_xid <> cur)::int,
            modseq_xid = cur
        WHERE id = mb
        RETURNING uidnext - 1, highestmodseq INTO uid, seq;
        INSERT INTO messages (mailbox_id, uid, size, raw, modseq)
        VALUES (mb, uid, length(p_local_raw), p_local_raw, seq);
        n := n + 1;
    END LOOP;
    IF coalesce(array_length(p_relay, 1), 0) > 0 THEN
        INSERT INTO outbound_queue (queue_id, sender, recipients, raw)
        VALUES (p_queue_id, p_sender, p_relay, p_relay_raw);
    END IF;
    RETURN n;
END $$;

-- A transaction storing several messages first calls postern_deliver_lock with every local
-- recipient of all of them, then postern_deliver for each. The INBOXes are locked here in
-- the order postern_deliver locks them (by user id), and as strongly as any writer of the
-- row, so that two such transactions, or one and a postern_deliver of its own, never wait for
-- each other in a circle. Returns the number of INBOXes locked.
CREATE FUNCTION postern_deliver_lock(p_local text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    u record;
    n integer := 0;
BEGIN
    FOR u IN SELECT id FROM users WHERE address = ANY (p_local) ORDER BY id LOOP
        PERFORM 1 FROM mailboxes WHERE id = postern_inbox(u.id) FOR UPDATE;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
