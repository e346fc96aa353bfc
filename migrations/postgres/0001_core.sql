-- Core tables: runs, their steps, approval requests, approvals, the audit log.
-- Times are milliseconds since the Unix epoch (BIGINT) on both backends.

CREATE TABLE runs (
    id BIGSERIAL PRIMARY KEY,
    runbook TEXT NOT NULL,
    command TEXT NOT NULL,
    plan TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    target TEXT NOT NULL,
    destructive BIGINT NOT NULL,
    dry_run BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('awaiting_approval', 'queued', 'running', 'awaiting_gate',
        'needs_attention', 'succeeded', 'failed', 'cancelled', 'denied', 'expired', 'void', 'aborted')),
    -- Equal to target while a destructive run is active, NULL otherwise: one active run per target.
    active_target TEXT UNIQUE,
    requested_by TEXT NOT NULL,
    requested_account TEXT NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    -- Read-only steps before the first destructive one have run (shown with the plan).
    preflight_done BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    detail TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX runs_state ON runs (state);

CREATE TABLE run_steps (
    run_id BIGINT NOT NULL REFERENCES runs (id),
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    destructive BIGINT NOT NULL,
    idempotent BIGINT NOT NULL,
    gate BIGINT NOT NULL,
    gate_approved BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'skipped')),
    attempts BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    finished_at BIGINT,
    duration_ms BIGINT,
    summary TEXT,
    log TEXT,
    error TEXT,
    data TEXT,
    PRIMARY KEY (run_id, idx)
);

CREATE TABLE approval_requests (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs (id),
    action TEXT NOT NULL CHECK (action IN ('run', 'gate', 'retry', 'skip', 'abort')),
    step_idx BIGINT,
    fingerprint TEXT NOT NULL,
    requester TEXT NOT NULL,
    requester_account TEXT NOT NULL,
    required BIGINT NOT NULL CHECK (required >= 1),
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled', 'void')),
    -- Equal to run_id while pending, NULL otherwise: one open request per run.
    pending_run BIGINT UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT,
    reason TEXT,
    UNIQUE (id, requester, fingerprint)
);

-- An approval names the request, its requester and the fingerprint it approves; the foreign key
-- ties all three to the request, and the CHECK forbids approving one's own request.
CREATE TABLE approvals (
    request_id BIGINT NOT NULL,
    person TEXT NOT NULL,
    account TEXT NOT NULL,
    platform TEXT NOT NULL,
    role TEXT NOT NULL,
    requester TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, person),
    CHECK (person <> requester),
    FOREIGN KEY (request_id, requester, fingerprint)
        REFERENCES approval_requests (id, requester, fingerprint)
);

-- Chat messages showing a request or run (cards), so clicks can be matched to their card.
CREATE TABLE messages (
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    run_id BIGINT NOT NULL REFERENCES runs (id),
    request_id BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (platform, channel, message_id)
);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    person TEXT,
    account TEXT,
    platform TEXT NOT NULL,
    channel TEXT,
    action TEXT NOT NULL,
    run_id BIGINT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- The newest audit row, updated in the same transaction as each append: a truncated tail shows.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
