-- Version 11: the web side (services/webd).
--
-- Administrators of the console are not mail users: web_admins holds them, each with the
-- same kind of secret as a mailbox (RFC 5803 SCRAM-SHA-256, never a password) and a role.
-- A system admin does everything; a domain admin only what concerns the domains listed for
-- it in web_admin_domains (their users, their HAMR settings).
--
-- web_sessions holds the sessions of both kinds of login (an admin on the console, a
-- mailbox user on the self-service page), so that any webd replica serves any request.
-- Only a hash of the session token is stored: a copy of the table logs nobody in. Each
-- session carries its CSRF token, which every change must echo in X-CSRF-Token.

CREATE TABLE web_admins (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name = lower(name) AND name ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    secret      text NOT NULL,
    role        text NOT NULL CHECK (role IN ('system', 'domain')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE web_admin_domains (
    admin_id    bigint NOT NULL REFERENCES web_admins(id) ON DELETE CASCADE,
    domain_id   bigint NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    PRIMARY KEY (admin_id, domain_id)
);

CREATE TABLE web_sessions (
    token_hash  bytea PRIMARY KEY,          -- SHA-256 of the cookie's token
    admin_id    bigint REFERENCES web_admins(id) ON DELETE CASCADE,
    user_id     bigint REFERENCES users(id) ON DELETE CASCADE,
    csrf        text NOT NULL,
    client_addr inet,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,       -- pushed forward by each request (idle timeout)
    CHECK ((admin_id IS NULL) <> (user_id IS NULL))
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);
