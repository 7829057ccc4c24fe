-- Version 9: SEARCH in a charset other than US-ASCII (RFC 3501 section 6.4.4: "[MIME-IMB]
-- content transfer encodings, and [MIME-HDRS] strings in headers, MUST be decoded before
-- comparing text"). imapd keeps a decoded form of each message next to its raw bytes,
-- computed from the raw message (mail_search_text in lib/mail/mime.h):
--   search_headers  the top-level header fields, "Name: value\n" each, unfolded, RFC 2047
--                   words decoded to UTF-8;
--   search_body     the text of the text parts, transfer encoding undone, in UTF-8.
-- NULL means not computed yet: imapd fills the missing ones of a mailbox before a search
-- that needs them, and a search falls back to the raw bytes for a row still NULL. A
-- message too large to parse gets empty strings. US-ASCII searches never read these.

ALTER TABLE messages
    ADD COLUMN search_headers text,
    ADD COLUMN search_body    text;

-- Unicode case-insensitive matching (ILIKE, ~*) where the server has ICU: the database's
-- C collation folds ASCII letters only.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        ALTER TABLE messages ALTER COLUMN search_headers TYPE text COLLATE "und-x-icu",
                             ALTER COLUMN search_body TYPE text COLLATE "und-x-icu";
    END IF;
END $$;

-- The messages of a mailbox still to be computed, found without a scan of the mailbox's
-- decoded text.
CREATE INDEX messages_search_missing ON messages (mailbox_id, uid) WHERE search_body IS NULL;

-- COPY keeps the decoded form along with the cached structure (as 0007, plus the two
-- columns).
CREATE OR REPLACE FUNCTION postern_copy(p_src bigint, p_lo bigint[], p_hi bigint[], p_user bigint,
                                        p_dest text)
RETURNS TABLE (src_uid bigint, dst_uid bigint, uidvalidity bigint, mailbox_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_dst   bigint := postern_mailbox_id(p_user, p_dest);
    v_uids  bigint[];
    v_first bigint;
    v_val   bigint;
BEGIN
    PERFORM postern_lock_mailboxes(ARRAY[v_dst]);
    SELECT coalesce(array_agg(u ORDER BY u), '{}') INTO v_uids
    FROM postern_uids(p_src, p_lo, p_hi) u;
    UPDATE mailboxes SET uidnext = uidnext + cardinality(v_uids) WHERE id = v_dst
    RETURNING uidnext - cardinality(v_uids), uidvalidity INTO v_first, v_val;
    RETURN QUERY
    WITH ins AS (
        INSERT INTO messages (mailbox_id, uid, internal_date, size, flags, raw, hdr_date,
                              envelope, bodystructure, body, search_headers, search_body)
        SELECT v_dst, v_first + array_position(v_uids, m.uid) - 1, m.internal_date, m.size,
               m.flags, m.raw, m.hdr_date, m.envelope, m.bodystructure, m.body,
               m.search_headers, m.search_body
        FROM messages m WHERE m.mailbox_id = p_src AND m.uid = ANY (v_uids)
        RETURNING uid)
    SELECT v_uids[ins.uid - v_first + 1], ins.uid, v_val, v_dst FROM ins ORDER BY 2;
END $$;
