-- A customer email step (`email_customers`) whose rows are all queued. They are queued in
-- batches, each its own transaction (one transaction for a large list held the store's write
-- lock, on SQLite every writer's, past the run's lease); a step that runs again finds this
-- row and only follows its rows, else it queues those still missing (keys already there are
-- skipped).
CREATE TABLE email_sends (
    -- The step's outbox key prefix, e.g. `email:run:7:step:3:sub:`.
    prefix TEXT PRIMARY KEY,
    recipients BIGINT NOT NULL,
    enqueued_at BIGINT NOT NULL
);
