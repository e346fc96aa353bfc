-- Incidents (the status-page lifecycle investigating → identified → monitoring → resolved) and
-- their timelines. One incident is open at a time: `open_slot` is 1 while unresolved and NULL
-- once resolved, and it is UNIQUE (the same pattern as runs.active_target).
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    impact TEXT NOT NULL CHECK (impact IN ('none', 'minor', 'major', 'critical')),
    region TEXT,
    run_id BIGINT REFERENCES runs (id),
    opened_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    resolved_at BIGINT,
    -- Statuspage's id once the create call went through.
    statuspage_incident_id TEXT,
    open_slot INTEGER UNIQUE CHECK (open_slot = 1),
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK ((status = 'resolved') = (open_slot IS NULL))
);
CREATE INDEX incidents_resolved ON incidents (resolved_at);

CREATE TABLE incident_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    status TEXT NOT NULL
        CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    body TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX incident_updates_incident ON incident_updates (incident_id, id);
