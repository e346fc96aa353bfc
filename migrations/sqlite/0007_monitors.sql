-- What the health monitor last concluded about each region. `episode` counts down periods;
-- the alert for episode N is keyed by it, so processes sharing the store alert once.
CREATE TABLE monitor_state (
    region TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('up', 'down')),
    since BIGINT NOT NULL,
    episode BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
