-- Version 7: the mail store shaped for IMAP4rev1 (RFC 3501) with CONDSTORE/QRESYNC
-- (RFC 7162), UIDPLUS (RFC 4315), MOVE (RFC 6851) and SPECIAL-USE (RFC 6154), shared by
-- pop3d, imapd, smtpd's postern_deliver and the notifier's postern_alert.
--
-- Mod-sequences. Every change of a message (insert, flags, move out, delete) takes the
-- mailbox's modseq for the current transaction from postern_modseq(): the first change
-- of a transaction to a mailbox locks the mailbox row and bumps highestmodseq; later
-- changes of the same transaction to that mailbox share the value. The row lock
-- serialises the writers of one mailbox until commit, so a transaction that commits a
-- higher modseq always commits after every lower one: a session that has seen
-- highestmodseq N and then asks for "changed since N" misses nothing. Triggers do this,
-- so writers that know nothing about modseqs (postern_deliver, pop3d) stay correct.
--
-- Lock order, to keep writers free of deadlocks: the mailbox row first, then message
-- rows. postern_deliver locks the mailbox (uidnext) before inserting; the functions
-- below lock their mailbox rows (in id order when there are two) before touching
-- messages. A bare UPDATE/DELETE of several message rows locks the rows first and the
-- mailbox afterwards; pop3d therefore deletes through postern_expunge().
--
-- Expunged UIDs are kept in `expunged` for 30 days (EXPUNGED_KEEP below), cleaned up by
-- the first change of each transaction to the mailbox; mailboxes.expunged_floor is the
-- highest modseq among the rows dropped, so "expunged since M" is complete exactly when
-- M >= expunged_floor (otherwise the caller compares UID lists itself).
--
-- Errors raised by the functions, by SQLSTATE: P0002 no such mailbox, 23505 the name
-- exists already, 42501 not permitted (INBOX cannot be deleted). Anything else is a
-- temporary failure for the caller.

ALTER TABLE mailboxes
    ADD COLUMN special_use    text CHECK (special_use IN ('\Sent', '\Drafts', '\Trash',
                                                          '\Junk', '\Archive', '\All',
                                                          '\Flagged')),
    ADD COLUMN subscribed     boolean NOT NULL DEFAULT true,
    ADD COLUMN highestmodseq  bigint NOT NULL DEFAULT 1,
    ADD COLUMN modseq_xid     bigint NOT NULL DEFAULT 0,  -- transaction that last bumped it
    ADD COLUMN expunged_floor bigint NOT NULL DEFAULT 0;

ALTER TABLE messages
    ADD COLUMN modseq        bigint NOT NULL DEFAULT 1,
    ADD COLUMN hdr_date      timestamptz,     -- the Date: header (postern_hdr_date, at insert)
    ADD COLUMN envelope      text,            -- RFC 3501 ENVELOPE, cached by imapd
    ADD COLUMN bodystructure text,            -- RFC 3501 BODYSTRUCTURE, cached by imapd
    ADD COLUMN body          text;            -- RFC 3501 BODY (non-extensible), cached
-- Stored uncompressed out of line, so that substring(raw from .. for ..) reads only the
-- slice asked for: a large message is sent in chunks without ever being read whole.
ALTER TABLE messages ALTER COLUMN raw SET STORAGE EXTERNAL;
CREATE INDEX messages_mailbox_modseq ON messages (mailbox_id, modseq);

CREATE TABLE expunged (
    mailbox_id bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid        bigint NOT NULL,
    modseq     bigint NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX expunged_mailbox_modseq ON expunged (mailbox_id, modseq);
CREATE INDEX expunged_mailbox_at ON expunged (mailbox_id, at);

-- UIDVALIDITY values (RFC 3501 section 2.3.1.1): every mailbox created or renamed gets
-- a value never given before, greater than any earlier one, so a name created again
-- never shows a client an old value. 32-bit and non-zero.
CREATE SEQUENCE mailbox_uidvalidity;
SELECT setval('mailbox_uidvalidity',
              greatest(extract(epoch FROM clock_timestamp())::bigint,
                       (SELECT coalesce(max(uidvalidity), 0) + 1 FROM mailboxes)));

CREATE FUNCTION postern_new_uidvalidity() RETURNS bigint
LANGUAGE sql AS $$ SELECT nextval('mailbox_uidvalidity') $$;

-- The modseq of this transaction's changes to mailbox p_mailbox (see the top); NULL
-- when the mailbox is gone (a cascade from its deletion).
CREATE FUNCTION postern_modseq(p_mailbox bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq   bigint;
    v_xid   bigint;
    v_cur   bigint := txid_current();
    v_floor bigint;
BEGIN
    SELECT highestmodseq, modseq_xid INTO v_seq, v_xid
    FROM mailboxes WHERE id = p_mailbox FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_xid = v_cur THEN
        RETURN v_seq;
    END IF;
    -- EXPUNGED_KEEP: expunge records older than 30 days are dropped.
    WITH gone AS (DELETE FROM expunged
                  WHERE mailbox_id = p_mailbox AND at < now() - interval '30 days'
                  RETURNING modseq)
    SELECT max(modseq) INTO v_floor FROM gone;
    UPDATE mailboxes
    SET highestmodseq = highestmodseq + 1, modseq_xid = v_cur,
        expunged_floor = greatest(expunged_floor, coalesce(v_floor, 0))
    WHERE id = p_mailbox
    RETURNING highestmodseq INTO v_seq;
    RETURN v_seq;
END $$;

CREATE FUNCTION postern_messages_modseq() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.modseq := coalesce(postern_modseq(NEW.mailbox_id), NEW.modseq);
    RETURN NEW;
END $$;

CREATE TRIGGER messages_modseq_insert BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION postern_messages_modseq();
CREATE TRIGGER messages_modseq_update BEFORE UPDATE OF flags, mailbox_id ON messages
    FOR EACH ROW WHEN (OLD.flags IS DISTINCT FROM NEW.flags
                       OR OLD.mailbox_id <> NEW.mailbox_id)
    EXECUTE FUNCTION postern_messages_modseq();

-- A message left its mailbox (deleted, or moved to another one): recorded as expunged.
CREATE FUNCTION postern_messages_expunged() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    v_seq := postern_modseq(OLD.mailbox_id);
    IF v_seq IS NOT NULL THEN
        INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (OLD.mailbox_id, OLD.uid, v_seq)
        ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = EXCLUDED.modseq, at = EXCLUDED.at;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER messages_expunged_delete AFTER DELETE ON messages
    FOR EACH ROW EXECUTE FUNCTION postern_messages_expunged();
CREATE TRIGGER messages_expunged_move AFTER UPDATE OF mailbox_id ON messages
    FOR EACH ROW WHEN (OLD.mailbox_id <> NEW.mailbox_id)
    EXECUTE FUNCTION postern_messages_expunged();

-- ---- mailboxes of a user -----------------------------------------------------------

-- The canonical form of a mailbox name: INBOX in any case is INBOX (RFC 3501 5.1), a
-- trailing hierarchy separator "/" is dropped.
CREATE FUNCTION postern_mbname(p_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN upper(n) = 'INBOX' THEN 'INBOX' ELSE n END
    FROM (SELECT rtrim(p_name, '/') AS n) x
$$;

-- INBOX and the special-use folders of RFC 6154 for one user; existing names are kept.
CREATE FUNCTION postern_default_mailboxes(p_user bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailboxes (user_id, name, uidvalidity, special_use)
    SELECT p_user, d.name, postern_new_uidvalidity(), d.special_use
    FROM (VALUES ('INBOX', NULL), ('Sent', '\Sent'), ('Drafts', '\Drafts'),
                 ('Trash', '\Trash'), ('Junk', '\Junk')) d(name, special_use)
    WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.user_id = p_user AND m.name = d.name)
    ON CONFLICT (user_id, name) DO NOTHING;
    UPDATE mailboxes m SET special_use = d.special_use
    FROM (VALUES ('Sent', '\Sent'), ('Drafts', '\Drafts'), ('Trash', '\Trash'),
                 ('Junk', '\Junk')) d(name, special_use)
    WHERE m.user_id = p_user AND m.name = d.name AND m.special_use IS NULL
      AND NOT EXISTS (SELECT 1 FROM mailboxes o
                      WHERE o.user_id = p_user AND o.special_use = d.special_use);
END $$;

CREATE FUNCTION postern_users_mailboxes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM postern_default_mailboxes(NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER users_mailboxes AFTER INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION postern_users_mailboxes();

SELECT postern_default_mailboxes(id) FROM users;

-- The INBOX of a user, created on first use (kept from version 1, with a UIDVALIDITY
-- from the sequence).
CREATE OR REPLACE FUNCTION postern_inbox(p_user bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    mb bigint;
BEGIN
    SELECT id INTO mb FROM mailboxes WHERE user_id = p_user AND name = 'INBOX';
    IF mb IS NULL THEN
        INSERT INTO mailboxes (user_id, name, uidvalidity)
        VALUES (p_user, 'INBOX', postern_new_uidvalidity())
        ON CONFLICT (user_id, name) DO NOTHING
        RETURNING id INTO mb;
        IF mb IS NULL THEN
            SELECT id INTO mb FROM mailboxes WHERE user_id = p_user AND name = 'INBOX';
        END IF;
    END IF;
    RETURN mb;
END $$;

-- A flag list as stored: sorted, without duplicates or empty names.
CREATE FUNCTION postern_flags(p_flags text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(DISTINCT f ORDER BY f), '{}')
    FROM unnest(p_flags) f WHERE f IS NOT NULL AND f <> ''
$$;

-- The messages of p_mailbox whose UIDs lie in the ranges lo[i]..hi[i] (a UID set).
CREATE FUNCTION postern_uids(p_mailbox bigint, p_lo bigint[], p_hi bigint[])
RETURNS SETOF bigint
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT m.uid
    FROM unnest(p_lo, p_hi) r(lo, hi)
    JOIN messages m ON m.mailbox_id = p_mailbox AND m.uid BETWEEN r.lo AND r.hi
$$;

CREATE FUNCTION postern_mailbox_id(p_user bigint, p_name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    mb bigint;
BEGIN
    SELECT id INTO mb FROM mailboxes WHERE user_id = p_user AND name = postern_mbname(p_name);
    IF mb IS NULL THEN
        RAISE EXCEPTION 'no such mailbox' USING ERRCODE = 'P0002';
    END IF;
    RETURN mb;
END $$;

-- Locks mailbox rows in id order (the lock order above); raises P0002 when one is missing.
CREATE FUNCTION postern_lock_mailboxes(p_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    SELECT count(*) INTO n FROM (SELECT id FROM mailboxes WHERE id = ANY (p_ids)
                                 ORDER BY id FOR UPDATE) x;
    IF n <> (SELECT count(DISTINCT i) FROM unnest(p_ids) i) THEN
        RAISE EXCEPTION 'no such mailbox' USING ERRCODE = 'P0002';
    END IF;
END $$;


-- The superior names of p_name ("a" and "a/b" for "a/b/c") that do not exist yet are
-- created (RFC 3501 6.3.3 and 6.3.5).
CREATE FUNCTION postern_mailbox_superiors(p_user bigint, p_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_parts text[] := string_to_array(p_name, '/');
BEGIN
    FOR i IN 1 .. coalesce(array_length(v_parts, 1), 0) - 1 LOOP
        INSERT INTO mailboxes (user_id, name, uidvalidity)
        VALUES (p_user, postern_mbname(array_to_string(v_parts[1:i], '/')),
                postern_new_uidvalidity())
        ON CONFLICT (user_id, name) DO NOTHING;
    END LOOP;
END $$;

CREATE FUNCTION postern_mailbox_name_ok(p_name text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_name IS NULL OR p_name = '' OR strpos(p_name, '//') > 0 OR left(p_name, 1) = '/'
       OR p_name ~ '[\x01-\x1f\x7f*%]' THEN
        RAISE EXCEPTION 'bad mailbox name' USING ERRCODE = '42501';
    END IF;
END $$;

-- CREATE (RFC 3501 6.3.3), with an optional special-use attribute (RFC 6154 section 3).
CREATE FUNCTION postern_mailbox_create(p_user bigint, p_name text, p_special_use text)
RETURNS TABLE (id bigint, uidvalidity bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_name text := postern_mbname(p_name);
BEGIN
    PERFORM postern_mailbox_name_ok(v_name);
    IF EXISTS (SELECT 1 FROM mailboxes WHERE user_id = p_user AND name = v_name) THEN
        RAISE EXCEPTION 'mailbox exists' USING ERRCODE = '23505';
    END IF;
    PERFORM postern_mailbox_superiors(p_user, v_name);
    RETURN QUERY
    INSERT INTO mailboxes (user_id, name, uidvalidity, special_use)
    VALUES (p_user, v_name, postern_new_uidvalidity(), nullif(p_special_use, ''))
    RETURNING id, uidvalidity;
END $$;

-- DELETE (RFC 3501 6.3.4): INBOX cannot be deleted. The messages go with the mailbox;
-- inferior names stay. Returns the deleted mailbox's id.
CREATE FUNCTION postern_mailbox_delete(p_user bigint, p_name text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_name text := postern_mbname(p_name);
    v_id   bigint;
BEGIN
    IF v_name = 'INBOX' THEN
        RAISE EXCEPTION 'INBOX cannot be deleted' USING ERRCODE = '42501';
    END IF;
    DELETE FROM mailboxes WHERE user_id = p_user AND name = v_name RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'no such mailbox' USING ERRCODE = 'P0002';
    END IF;
    RETURN v_id;
END $$;

-- RENAME (RFC 3501 6.3.5). A mailbox and its inferior names ("a/b" with "a") take the
-- new name and a new UIDVALIDITY (so a client that knew the new name before cannot
-- mistake its cache for this mailbox). Renaming INBOX moves all its messages (with
-- their UIDs) to a new mailbox of that name and leaves INBOX empty; its inferior names
-- stay. Returns the renamed (or new) mailbox's id and UIDVALIDITY.
CREATE FUNCTION postern_mailbox_rename(p_user bigint, p_old text, p_new text)
RETURNS TABLE (id bigint, uidvalidity bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_old text := postern_mbname(p_old);
    v_new text := postern_mbname(p_new);
    v_id  bigint;
    v_new_id bigint;
BEGIN
    PERFORM postern_mailbox_name_ok(v_new);
    v_id := postern_mailbox_id(p_user, v_old);
    IF v_new = 'INBOX' OR EXISTS (SELECT 1 FROM mailboxes WHERE user_id = p_user AND name = v_new) THEN
        RAISE EXCEPTION 'mailbox exists' USING ERRCODE = '23505';
    END IF;
    IF left(v_new, length(v_old) + 1) = v_old || '/' THEN
        RAISE EXCEPTION 'cannot rename a mailbox into itself' USING ERRCODE = '42501';
    END IF;
    PERFORM postern_mailbox_superiors(p_user, v_new);
    IF v_old = 'INBOX' THEN
        PERFORM postern_lock_mailboxes(ARRAY[v_id]);
        INSERT INTO mailboxes (user_id, name, uidvalidity, uidnext)
        SELECT p_user, v_new, postern_new_uidvalidity(), m.uidnext FROM mailboxes m
        WHERE m.id = v_id
        RETURNING id INTO v_new_id;
        UPDATE messages SET mailbox_id = v_new_id WHERE mailbox_id = v_id;
        RETURN QUERY SELECT m.id, m.uidvalidity FROM mailboxes m WHERE m.id = v_new_id;
        RETURN;
    END IF;
    UPDATE mailboxes
    SET name = v_new || substr(name, length(v_old) + 1), uidvalidity = postern_new_uidvalidity()
    WHERE user_id = p_user AND (name = v_old OR left(name, length(v_old) + 1) = v_old || '/');
    RETURN QUERY SELECT m.id, m.uidvalidity FROM mailboxes m WHERE m.id = v_id;
END $$;

-- SUBSCRIBE / UNSUBSCRIBE (RFC 3501 6.3.6, 6.3.7) of an existing mailbox.
CREATE FUNCTION postern_mailbox_subscribe(p_user bigint, p_name text, p_on boolean)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    UPDATE mailboxes SET subscribed = p_on
    WHERE user_id = p_user AND name = postern_mbname(p_name)
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        RAISE EXCEPTION 'no such mailbox' USING ERRCODE = 'P0002';
    END IF;
    RETURN v_id;
END $$;

-- ---- messages ----------------------------------------------------------------------

-- APPEND (RFC 3501 6.3.11) with APPENDUID (RFC 4315 section 3): one message into the
-- user's mailbox p_name. p_internal_date NULL means now.
CREATE FUNCTION postern_append(p_user bigint, p_name text, p_flags text[],
                               p_internal_date timestamptz, p_raw bytea)
RETURNS TABLE (mailbox_id bigint, uid bigint, uidvalidity bigint, modseq bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_id   bigint := postern_mailbox_id(p_user, p_name);
    v_uid  bigint;
    v_val  bigint;
BEGIN
    UPDATE mailboxes SET uidnext = uidnext + 1 WHERE id = v_id
    RETURNING uidnext - 1, uidvalidity INTO v_uid, v_val;
    RETURN QUERY
    INSERT INTO messages (mailbox_id, uid, internal_date, size, flags, raw)
    VALUES (v_id, v_uid, coalesce(p_internal_date, now()), length(p_raw),
            postern_flags(coalesce(p_flags, '{}')), p_raw)
    RETURNING mailbox_id, uid, v_val, modseq;
END $$;

-- COPY (RFC 3501 6.4.7) with COPYUID (RFC 4315 section 3): the messages of p_src in the
-- UID set go to the user's mailbox p_dest with new UIDs allocated as one block, in UID
-- order. Rows: (source UID, new UID, destination UIDVALIDITY, destination id).
CREATE FUNCTION postern_copy(p_src bigint, p_lo bigint[], p_hi bigint[], p_user bigint,
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
                              envelope, bodystructure, body)
        SELECT v_dst, v_first + array_position(v_uids, m.uid) - 1, m.internal_date, m.size,
               m.flags, m.raw, m.hdr_date, m.envelope, m.bodystructure, m.body
        FROM messages m WHERE m.mailbox_id = p_src AND m.uid = ANY (v_uids)
        RETURNING uid)
    SELECT v_uids[ins.uid - v_first + 1], ins.uid, v_val, v_dst FROM ins ORDER BY 2;
END $$;

-- MOVE (RFC 6851): like COPY, but the messages leave p_src in the same transaction
-- (recorded as expunged there); their bytes are not copied.
CREATE FUNCTION postern_move(p_src bigint, p_lo bigint[], p_hi bigint[], p_user bigint,
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
    IF v_dst = p_src THEN
        RAISE EXCEPTION 'cannot move into the same mailbox' USING ERRCODE = '42501';
    END IF;
    PERFORM postern_lock_mailboxes(ARRAY[p_src, v_dst]);
    SELECT coalesce(array_agg(u ORDER BY u), '{}') INTO v_uids
    FROM postern_uids(p_src, p_lo, p_hi) u;
    UPDATE mailboxes SET uidnext = uidnext + cardinality(v_uids) WHERE id = v_dst
    RETURNING uidnext - cardinality(v_uids), uidvalidity INTO v_first, v_val;
    RETURN QUERY
    WITH mv AS (
        UPDATE messages m SET mailbox_id = v_dst, uid = v_first + array_position(v_uids, m.uid) - 1
        WHERE m.mailbox_id = p_src AND m.uid = ANY (v_uids)
        RETURNING m.uid)
    SELECT v_uids[mv.uid - v_first + 1], mv.uid, v_val, v_dst FROM mv ORDER BY 2;
END $$;

-- EXPUNGE (RFC 3501 6.4.3) and UID EXPUNGE (RFC 4315 section 2.1): removes the messages
-- flagged \Deleted (p_deleted_only), within the UID set when p_lo is not NULL. pop3d's
-- QUIT uses it with p_deleted_only false. Rows: first (NULL, the mailbox's highest
-- modseq afterwards), then (UID removed, its modseq) in UID order.
CREATE FUNCTION postern_expunge(p_mailbox bigint, p_lo bigint[], p_hi bigint[],
                                p_deleted_only boolean)
RETURNS TABLE (uid bigint, modseq bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_uids bigint[];
    v_seq  bigint;
BEGIN
    PERFORM postern_lock_mailboxes(ARRAY[p_mailbox]);
    WITH d AS (
        DELETE FROM messages m
        WHERE m.mailbox_id = p_mailbox
          AND (p_lo IS NULL OR m.uid IN (SELECT postern_uids(p_mailbox, p_lo, p_hi)))
          AND (NOT p_deleted_only OR '\Deleted' = ANY (m.flags))
        RETURNING m.uid)
    SELECT coalesce(array_agg(d.uid ORDER BY d.uid), '{}') INTO v_uids FROM d;
    SELECT highestmodseq INTO v_seq FROM mailboxes WHERE id = p_mailbox;
    RETURN QUERY SELECT NULL::bigint, v_seq;
    RETURN QUERY SELECT u, v_seq FROM unnest(v_uids) u;
END $$;

-- STORE (RFC 3501 6.4.6) with UNCHANGEDSINCE (RFC 7162 section 3.1.3). p_mode: 'set',
-- 'add' or 'remove'. Rows, in UID order: (uid, flags now, modseq now, status) with status
-- 0 changed, 1 unchanged (the flags were already so), 2 not changed because its modseq
-- is above p_unchangedsince (the MODIFIED response code).
CREATE FUNCTION postern_store(p_mailbox bigint, p_lo bigint[], p_hi bigint[], p_mode text,
                              p_flags text[], p_unchangedsince bigint)
RETURNS TABLE (uid bigint, flags text[], modseq bigint, status smallint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF p_mode NOT IN ('set', 'add', 'remove') THEN
        RAISE EXCEPTION 'bad store mode %', p_mode USING ERRCODE = '22023';
    END IF;
    PERFORM postern_lock_mailboxes(ARRAY[p_mailbox]);
    RETURN QUERY
    WITH sel AS (
        SELECT m.id, m.uid, m.flags, m.modseq,
               postern_flags(CASE p_mode
                   WHEN 'set' THEN coalesce(p_flags, '{}')
                   WHEN 'add' THEN m.flags || coalesce(p_flags, '{}')
                   ELSE ARRAY(SELECT unnest(m.flags) EXCEPT SELECT unnest(p_flags)) END) AS nf,
               (p_unchangedsince IS NOT NULL AND m.modseq > p_unchangedsince) AS failed
        FROM messages m
        WHERE m.mailbox_id = p_mailbox
          AND m.uid IN (SELECT postern_uids(p_mailbox, p_lo, p_hi))),
    upd AS (
        UPDATE messages m SET flags = sel.nf FROM sel
        WHERE m.id = sel.id AND NOT sel.failed AND sel.nf IS DISTINCT FROM sel.flags
        RETURNING m.uid, m.flags, m.modseq)
    SELECT upd.uid, upd.flags, upd.modseq, 0::smallint FROM upd
    UNION ALL
    SELECT sel.uid, sel.flags, sel.modseq, (CASE WHEN sel.failed THEN 2 ELSE 1 END)::smallint
    FROM sel WHERE sel.failed OR sel.nf IS NOT DISTINCT FROM sel.flags
    ORDER BY 1;
END $$;

-- ---- the Date: header, for SEARCH SENTBEFORE / SENTON / SENTSINCE -----------------------

-- The Date: header field of a raw message as a time, or NULL when there is none or it does
-- not parse (RFC 5322 section 3.3 dates, comments dropped). Only the header block of the
-- first 64 KiB is read.
CREATE FUNCTION postern_hdr_date(p_raw bytea) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v   text;
    hdr text;
BEGIN
    hdr := convert_from(substring(p_raw FROM 1 FOR 65536), 'LATIN1');
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

CREATE FUNCTION postern_messages_hdr_date() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.hdr_date IS NULL THEN
        NEW.hdr_date := postern_hdr_date(NEW.raw);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER messages_hdr_date BEFORE INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION postern_messages_hdr_date();

UPDATE messages SET hdr_date = postern_hdr_date(raw) WHERE hdr_date IS NULL;
