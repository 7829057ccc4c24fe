-- Version 12: the login history. The limiter replica that answers records every
-- authentication outcome the front ends and webd publish (AuthEvent), in batches
-- (services/limiter/logins.c), and deletes rows older than logins.keep_days days now and
-- then. `mailctl user logins` and webd's self-service page read a user's latest rows.
--
-- address is the identity as the client gave it, lower-cased, so attempts against names
-- nobody has are kept as well; rows do not point at users(id): `mailctl user del` deletes
-- them with the user, and the rest age out.

CREATE TABLE logins (
    address     text NOT NULL,
    at          timestamptz NOT NULL,
    service     text NOT NULL CHECK (service IN ('smtp', 'pop3', 'imap', 'web')),
    client_addr inet,                      -- NULL when the front end gave no IP address
    mechanism   text NOT NULL,             -- PLAIN, LOGIN, SCRAM-SHA-256, USER, ...
    tls         boolean NOT NULL,
    result      text NOT NULL CHECK (result IN ('ok', 'bad-credentials', 'temporary-failure',
                                                'aborted', 'malformed'))
);

-- A user's last N logins: WHERE address = $1 ORDER BY at DESC LIMIT N.
CREATE INDEX logins_address_at ON logins (address, at DESC);
-- Pruning by age. Rows arrive in time order, so a BRIN index stays tiny and cheap to keep.
CREATE INDEX logins_at ON logins USING brin (at);
