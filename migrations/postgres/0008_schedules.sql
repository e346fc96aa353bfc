-- One row per fired `[[schedules]]` due time. The UNIQUE key, written in the same write
-- transaction as the run request, makes a due time fire once however many `serve` processes
-- share the store or restart. `run_id` is NULL when the request was refused (`error` says why).
CREATE TABLE schedule_fires (
    id BIGSERIAL PRIMARY KEY,
    schedule TEXT NOT NULL,
    due_at BIGINT NOT NULL,
    run_id BIGINT REFERENCES runs (id),
    error TEXT,
    fired_at BIGINT NOT NULL,
    UNIQUE (schedule, due_at)
);
CREATE INDEX schedule_fires_latest ON schedule_fires (schedule, due_at DESC);
