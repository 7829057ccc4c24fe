-- Version 10: relayd works the outbound queue.
--
-- Each queued message keeps its recipients' states in outbound_recipients (pending,
-- delivered, bounced), filled from outbound_queue.recipients by a trigger so that every
-- writer (postern_deliver, the notifier's alerts, relayd's own bounces) stays as it is. A
-- relayd replica claims due messages with a lease (postern_relay_claim: FOR UPDATE SKIP
-- LOCKED, so replicas never take the same row), renews the lease while it works, and
-- records each attempt in one transaction (postern_relay_finish): recipient states, the
-- next try, and the bounce or delay notice it built. A message leaves the queue only when
-- no recipient is pending. The lease of a replica that died runs out and another takes
-- the message again.

ALTER TABLE outbound_queue
    ADD COLUMN lease_owner  text,
    ADD COLUMN lease_until  timestamptz,
    ADD COLUMN last_attempt timestamptz,
    ADD COLUMN warned_at    timestamptz,   -- the delay notice went out
    ADD COLUMN cancelled_by text;          -- mailctl queue delete: bounce what is pending
CREATE INDEX outbound_queue_created ON outbound_queue (created_at);
CREATE INDEX outbound_queue_queue_id ON outbound_queue (queue_id);

CREATE TABLE outbound_recipients (
    message_id bigint NOT NULL REFERENCES outbound_queue (id) ON DELETE CASCADE,
    recipient  text NOT NULL,
    domain     text NOT NULL,
    state      text NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'delivered', 'bounced')),
    last_reply text,
    remote     text,                      -- "mx.example.com[192.0.2.1]:25"
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, recipient)
);

CREATE FUNCTION postern_outbound_recipients() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbound_recipients (message_id, recipient, domain)
    SELECT DISTINCT NEW.id, r, lower(substring(r FROM '@([^@]*)$'))
    FROM unnest(NEW.recipients) AS r
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END $$;
CREATE TRIGGER outbound_queue_recipients AFTER INSERT ON outbound_queue
    FOR EACH ROW EXECUTE FUNCTION postern_outbound_recipients();
INSERT INTO outbound_recipients (message_id, recipient, domain)
SELECT DISTINCT q.id, r, lower(substring(r FROM '@([^@]*)$'))
FROM outbound_queue q, unnest(q.recipients) AS r
ON CONFLICT DO NOTHING;

-- Where mail for a domain goes instead of its MX hosts ('*': every domain without an entry
-- of its own): a smarthost, or a host under a test's control.
CREATE TABLE relay_transports (
    domain     text PRIMARY KEY,
    host       text NOT NULL,
    port       integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- STARTTLS policy per destination domain ('*' for the default; without any entry: may).
CREATE TABLE relay_tls_policy (
    domain     text PRIMARY KEY,
    policy     text NOT NULL CHECK (policy IN ('may', 'encrypt', 'verify')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Claims up to p_limit due messages for p_owner for p_lease_s seconds. A message is due when
-- its next try has come and nobody holds a live lease on it. Returns each with its pending
-- recipients (sorted, so that a domain's recipients are together).
CREATE FUNCTION postern_relay_claim(p_owner text, p_lease_s integer, p_limit integer)
RETURNS TABLE (id bigint, queue_id text, sender text, created_ms bigint, attempts integer,
               warned boolean, cancelled_by text, recipients text[])
LANGUAGE sql AS $$
    WITH due AS (
        SELECT q.id FROM outbound_queue q
        WHERE q.next_attempt <= now() AND (q.lease_until IS NULL OR q.lease_until < now())
        ORDER BY q.next_attempt
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE outbound_queue q
        SET lease_owner = p_owner,
            lease_until = now() + make_interval(secs => p_lease_s),
            attempts = q.attempts + 1,
            last_attempt = now()
        FROM due WHERE q.id = due.id
        RETURNING q.*
    )
    SELECT c.id, c.queue_id, c.sender,
           (extract(epoch FROM c.created_at) * 1000)::bigint, c.attempts,
           c.warned_at IS NOT NULL, c.cancelled_by,
           coalesce((SELECT array_agg(r.recipient ORDER BY r.domain, r.recipient)
                     FROM outbound_recipients r
                     WHERE r.message_id = c.id AND r.state = 'pending'), '{}')
    FROM claimed c ORDER BY c.id
$$;

-- Keeps p_owner's leases on p_ids alive for p_lease_s more seconds.
CREATE FUNCTION postern_relay_renew(p_owner text, p_ids bigint[], p_lease_s integer)
RETURNS integer
LANGUAGE sql AS $$
    WITH r AS (
        UPDATE outbound_queue SET lease_until = now() + make_interval(secs => p_lease_s)
        WHERE id = ANY (p_ids) AND lease_owner = p_owner
        RETURNING 1
    )
    SELECT count(*)::integer FROM r
$$;

-- Records one attempt at message p_id: each recipient in p_rcpts gets its new state
-- ('pending' keeps it for later), last reply and remote host. When no recipient is pending
-- any more the message leaves the queue; otherwise its lease is released and it is due
-- again at p_next. p_notice, when given, is a bounce or delay notice (a whole message) for
-- the original sender: stored in the sender's INBOX when the sender is a local user,
-- queued with the null sender when the sender's domain is not hosted, dropped otherwise (a
-- hosted address without a user). p_warned marks the delay notice as sent. Returns
-- 'delivered' (left the queue) or 'deferred', and after a comma what became of the notice:
-- 'local', 'queued', 'dropped' or 'none'.
CREATE FUNCTION postern_relay_finish(p_id bigint, p_owner text, p_rcpts text[],
                                     p_states text[], p_replies text[], p_remotes text[],
                                     p_next_s integer, p_last text, p_warned boolean,
                                     p_notice bytea, p_notice_id text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_sender  text;
    v_domain  text;
    v_left    integer;
    v_outcome text;
    v_notice  text := 'none';
BEGIN
    SELECT sender INTO v_sender FROM outbound_queue WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'gone,none';
    END IF;
    UPDATE outbound_recipients r
    SET state = u.state, last_reply = u.reply, remote = u.remote, updated_at = now()
    FROM unnest(p_rcpts, p_states, p_replies, p_remotes) AS u (rcpt, state, reply, remote)
    WHERE r.message_id = p_id AND r.recipient = u.rcpt AND r.state = 'pending';
    SELECT count(*) INTO v_left FROM outbound_recipients
    WHERE message_id = p_id AND state = 'pending';
    IF v_left = 0 THEN
        DELETE FROM outbound_queue WHERE id = p_id;
        v_outcome := 'delivered';
    ELSE
        UPDATE outbound_queue
        -- deleted by an administrator meanwhile: due at once, to be returned to the sender
        SET next_attempt = CASE WHEN cancelled_by IS NOT NULL THEN now()
                                ELSE now() + make_interval(secs => p_next_s) END,
            last_error = p_last,
            warned_at = CASE WHEN p_warned THEN coalesce(warned_at, now()) ELSE warned_at END,
            lease_owner = NULL, lease_until = NULL
        WHERE id = p_id;
        v_outcome := 'deferred';
    END IF;
    IF p_notice IS NOT NULL AND v_sender <> '' THEN
        v_domain := lower(substring(v_sender FROM '@([^@]*)$'));
        IF EXISTS (SELECT 1 FROM users WHERE address = lower(v_sender)) THEN
            -- RFC 5321 section 4.4: the final delivery adds the return path
            PERFORM postern_deliver(p_notice_id, '', ARRAY[lower(v_sender)],
                                    convert_to(E'Return-Path: <>\r\n', 'UTF8') || p_notice,
                                    '{}', NULL);
            v_notice := 'local';
        ELSIF EXISTS (SELECT 1 FROM domains WHERE name = v_domain) THEN
            v_notice := 'dropped';
        ELSE
            PERFORM postern_deliver(p_notice_id, '', '{}', NULL, ARRAY[v_sender], p_notice);
            v_notice := 'queued';
        END IF;
    END IF;
    RETURN v_outcome || ',' || v_notice;
END $$;
