-- Timeline entries written by runbook steps carry the step's key (`run:<id>:step:<index>`), so
-- a step re-run after a crash finds its entry instead of posting a second one; and the
-- component statuses an entry set (JSON object: component name → Statuspage status name).
ALTER TABLE incident_updates ADD COLUMN source TEXT;
ALTER TABLE incident_updates ADD COLUMN components TEXT;
CREATE UNIQUE INDEX incident_updates_source ON incident_updates (source)
    WHERE source IS NOT NULL;
