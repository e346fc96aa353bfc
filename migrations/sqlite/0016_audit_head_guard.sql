-- The audit head only moves forward, one append at a time, and is never removed: cutting the
-- log back and rewinding its head takes dropping these triggers first (as for the log's own),
-- and an anchor kept outside drbot (`audit --verify --expect-head`) still shows it.
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
WHEN NEW.seq <= OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'audit_head only moves forward');
END;

CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN
    SELECT RAISE(ABORT, 'audit_head is never removed');
END;
