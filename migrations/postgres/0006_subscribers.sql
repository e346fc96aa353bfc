-- Customer email subscribers. Addresses are stored lower-cased (one row per address); `token`
-- is the subscriber's own unsubscribe secret (32 random bytes, hex). An unsubscribed row is
-- kept, with its time, so a later import does not silently subscribe the address again.
CREATE TABLE subscribers (
    id BIGSERIAL PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT,
    token TEXT NOT NULL UNIQUE CHECK (length(token) = 64),
    created_at BIGINT NOT NULL,
    unsubscribed_at BIGINT
);
CREATE INDEX subscribers_active ON subscribers (id) WHERE unsubscribed_at IS NULL;
