-- Version 3: what the limiter must keep across restarts (HAMR-disabled accounts, active
-- harvesting blocks and the offense history behind longer blocks for repeat offenders),
-- harvesting exemptions, the administrators' alert addresses and the alerts sent.
-- HAMR and harvesting settings live in `settings` (scopes system/domain/user).

CREATE TABLE send_disabled (
    user_id   bigint PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    since     timestamptz NOT NULL DEFAULT now(),
    reason    text NOT NULL
);

CREATE TABLE blocks (
    network   cidr PRIMARY KEY,          -- an IPv4 /32 or an IPv6 /64
    service   text NOT NULL,             -- smtp, pop3, imap: where the failures happened
    reason    text NOT NULL,
    since     timestamptz NOT NULL DEFAULT now(),
    until     timestamptz NOT NULL,
    offense   integer NOT NULL DEFAULT 1
);

-- How often a network has been blocked, kept after a block ends so repeat offenders get
-- longer blocks; forgotten after a quiet period decided by the limiter.
CREATE TABLE block_history (
    network      cidr PRIMARY KEY,
    offenses     integer NOT NULL,
    last_blocked timestamptz NOT NULL
);

CREATE TABLE harvest_exempt (
    network    cidr PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alert_addresses (
    address    text PRIMARY KEY CHECK (address = lower(address) AND address LIKE '%_@_%'),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alerts (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    cause      text NOT NULL,
    subject    text NOT NULL,            -- the user or the network the alert is about
    detail     text NOT NULL,
    recipients text[] NOT NULL
);
