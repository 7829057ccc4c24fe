-- Version 6: users HAMR is throttling now, written by the limiter each time it refuses a
-- message with "throttle", so that `mailctl hamr status` can show who, since when, how
-- many messages were refused, and until when (the row is stale once until has passed).
CREATE TABLE hamr_throttled (
    address  text PRIMARY KEY,
    since    timestamptz NOT NULL DEFAULT now(),
    until    timestamptz NOT NULL,
    refused  integer NOT NULL DEFAULT 1,
    reason   text NOT NULL
);
