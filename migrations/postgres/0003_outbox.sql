-- The durable delivery outbox: one row per outbound delivery (an email to one recipient, a
-- Statuspage call, a chat broadcast), written in the transaction of the event that caused it.
CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    -- Idempotency key: enqueueing the same delivery twice keeps one row.
    key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- Deliveries with the same ordering key go out one at a time, oldest first.
    ordering_key TEXT,
    -- pending | sending | delivered | failed
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    last_error TEXT,
    receipt TEXT,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_at);
CREATE INDEX outbox_ordering ON outbox (ordering_key, id) WHERE ordering_key IS NOT NULL;
