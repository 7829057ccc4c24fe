-- Postern schema, version 1: hosted domains and users, tiered settings, relay list,
-- mailboxes and messages (shaped for IMAP: UIDVALIDITY, UIDNEXT, UID, flags), the
-- outbound queue, and the audit log of administrative actions.

CREATE TABLE domains (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name = lower(name) AND name <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    domain_id   bigint NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    address     text NOT NULL UNIQUE CHECK (address = lower(address) AND address LIKE '%_@_%'),
    secret      text NOT NULL,           -- RFC 5803 SCRAM-SHA-256 secret, never a password
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tiered settings: scope 'system' (scope_id 0), 'domain' (domains.id), 'user' (users.id).
-- A value absent at one level is inherited from the level above.
CREATE TABLE settings (
    scope       text NOT NULL CHECK (scope IN ('system', 'domain', 'user')),
    scope_id    bigint NOT NULL DEFAULT 0,
    key         text NOT NULL,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, scope_id, key)
);

-- Client networks allowed to relay when relay.mode is 'select'. Empty at first.
CREATE TABLE relay_networks (
    network     cidr PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mailboxes (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        text NOT NULL,
    uidvalidity bigint NOT NULL,
    uidnext     bigint NOT NULL DEFAULT 1,
    UNIQUE (user_id, name)
);

CREATE TABLE messages (
    id            bigserial PRIMARY KEY,
    mailbox_id    bigint NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    uid           bigint NOT NULL,
    internal_date timestamptz NOT NULL DEFAULT now(),
    size          integer NOT NULL,
    flags         text[] NOT NULL DEFAULT '{}',
    raw           bytea NOT NULL,
    UNIQUE (mailbox_id, uid)
);

CREATE TABLE outbound_queue (
    id           bigserial PRIMARY KEY,
    queue_id     text NOT NULL,
    sender       text NOT NULL,           -- '' for the null sender
    recipients   text[] NOT NULL,
    raw          bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    next_attempt timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbound_queue_next ON outbound_queue (next_attempt);

CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    detail  text NOT NULL DEFAULT ''
);

-- The INBOX of a user, created on first use.
CREATE FUNCTION postern_inbox(p_user bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    mb bigint;
BEGIN
    SELECT id INTO mb FROM mailboxes WHERE user_id = p_user AND name = 'INBOX';
    IF mb IS NULL THEN
        INSERT INTO mailboxes (user_id, name, uidvalidity)
        VALUES (p_user, 'INBOX', extract(epoch FROM clock_timestamp())::bigint)
        ON CONFLICT (user_id, name) DO NOTHING
        RETURNING id INTO mb;
        IF mb IS NULL THEN
            SELECT id INTO mb FROM mailboxes WHERE user_id = p_user AND name = 'INBOX';
        END IF;
    END IF;
    RETURN mb;
END $$;

-- One accepted message, stored in one statement (hence one transaction): a copy in the
-- INBOX of every local recipient (addresses of existing users, lowercased) and, when
-- p_relay is not empty, one entry in the outbound queue. p_local_raw is what local
-- mailboxes get (with Return-Path), p_relay_raw what is relayed. Returns the number of
-- local copies stored.
CREATE FUNCTION postern_deliver(p_queue_id text, p_sender text, p_local text[],
                                p_local_raw bytea, p_relay text[], p_relay_raw bytea)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    u   record;
    mb  bigint;
    uid bigint;
    n   integer := 0;
BEGIN
    FOR u IN SELECT id FROM users WHERE address = ANY (p_local) ORDER BY id LOOP
        mb := postern_inbox(u.id);
        UPDATE mailboxes SET uidnext = uidnext + 1 WHERE id = mb RETURNING uidnext - 1 INTO uid;
        INSERT INTO messages (mailbox_id, uid, size, raw)
        VALUES (mb, uid, length(p_local_raw), p_local_raw);
        n := n + 1;
    END LOOP;
    IF coalesce(array_length(p_relay, 1), 0) > 0 THEN
        INSERT INTO outbound_queue (queue_id, sender, recipients, raw)
        VALUES (p_queue_id, p_sender, p_relay, p_relay_raw);
    END IF;
    RETURN n;
END $$;
