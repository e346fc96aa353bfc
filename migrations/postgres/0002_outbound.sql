-- Chat posts drbot made or is making, by idempotency key: a post is claimed (message_id NULL)
-- before it is sent and completed after, so a retry or a restart never posts twice.
CREATE TABLE outbound (
    key TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT,
    created_at BIGINT NOT NULL
);

-- One card per run per channel.
CREATE UNIQUE INDEX messages_one_card ON messages (platform, channel, run_id);
