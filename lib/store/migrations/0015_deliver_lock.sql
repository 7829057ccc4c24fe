-- Version 15: several accepted messages stored in one transaction (smtpd's group commit).
-- Such a transaction first calls postern_deliver_lock with every local recipient of all its
-- messages, then postern_deliver for each. The INBOXes are locked here in the order
-- postern_deliver locks them (by user id; the row lock its UPDATE of uidnext and the modseq
-- trigger's FOR UPDATE take), so that two such transactions, or one and a postern_deliver of
-- its own, never wait for each other in a circle. Returns the number of INBOXes locked.
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
