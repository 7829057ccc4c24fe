-- Version 16: the Date: header is read once per delivered message, and only its header block.
--
-- The version 7 trigger ran for every INSERT into messages: a PL/pgSQL BEFORE ROW trigger
-- that sets NEW.hdr_date copies the whole row (the message in it) twice, and
-- postern_hdr_date converted and scanned the first 64 KiB whatever the header's size. For a
-- 1 MiB message that was a quarter of PostgreSQL's time in storing it, and it was done again
-- for each local recipient. Now postern_deliver reads the date once for the message and
-- gives it to each INSERT; the trigger runs only for an INSERT that gives none (APPEND, and a
-- message without a Date: field, whose date stays NULL as before); postern_hdr_date cuts the
-- raw bytes at the first empty line before converting them. Same answers.

CREATE OR REPLACE FUNCTION postern_hdr_date(p_raw bytea) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    raw bytea := substring(p_raw FROM 1 FOR 65536);
    v   text;
    hdr text;
    e1  integer;
    e2  integer;
BEGIN
    -- The header block ends at the first empty line: a line feed followed by another, or by
    -- a carriage return and a line feed (CRLF and bare LF alike, as the split below sees it).
    e1 := position('\x0a0a'::bytea IN raw);
    e2 := position('\x0a0d0a'::bytea IN raw);
    IF e1 > 0 AND (e2 = 0 OR e1 < e2) THEN
        raw := substring(raw FROM 1 FOR e1);
    ELSIF e2 > 0 THEN
        raw := substring(raw FROM 1 FOR e2);
    END IF;
    hdr := convert_from(raw, 'LATIN1');
    hdr := split_part(replace(hdr, E'\r\n', E'\n'), E'\n\n', 1);
    v := substring(hdr FROM '(?n)^[Dd][Aa][Tt][Ee]:[ \t]*([^\n]*(\n[ \t][^\n]*)*)');
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    v := regexp_replace(v, '\([^)]*\)', '', 'g');
    v := btrim(regexp_replace(v, '\s+', ' ', 'g'));
    RETURN v::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

DROP TRIGGER messages_hdr_date ON messages;
CREATE TRIGGER messages_hdr_date BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.hdr_date IS NULL) EXECUTE FUNCTION postern_messages_hdr_date();

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
    hd  timestamptz;
    n   integer := 0;
BEGIN
    FOR u IN SELECT id FROM users WHERE address = ANY (p_local) ORDER BY id LOOP
        IF n = 0 THEN
            hd := postern_hdr_date(p_local_raw);
        END IF;
        mb := postern_inbox(u.id);
        cur := txid_current();
        UPDATE mailboxes
        SET uidnext = uidnext + 1,
            highestmodseq = highestmodseq + (modseq_xid <> cur)::int,
            modseq_xid = cur
        WHERE id = mb
        RETURNING uidnext - 1, highestmodseq INTO uid, seq;
        INSERT INTO messages (mailbox_id, uid, size, raw, modseq, hdr_date)
        VALUES (mb, uid, length(p_local_raw), p_local_raw, seq, hd);
        n := n + 1;
    END LOOP;
    IF coalesce(array_length(p_relay, 1), 0) > 0 THEN
        INSERT INTO outbound_queue (queue_id, sender, recipients, raw)
        VALUES (p_queue_id, p_sender, p_relay, p_relay_raw);
    END IF;
    RETURN n;
END $$;
