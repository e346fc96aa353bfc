-- Checklists attached to runs: a runbook's `checklists` are opened for each of its runs
-- (`run_id` set; one instance per run and checklist name). `held_step` is set while the run
-- waits (`needs_attention`) for required items of its step of that index; a tick on one of the
-- run's checklists queues it again, and the engine checks once more.
ALTER TABLE checklist_instances ADD COLUMN run_id BIGINT REFERENCES runs (id);
CREATE UNIQUE INDEX checklist_instances_run ON checklist_instances (run_id, name);
ALTER TABLE runs ADD COLUMN held_step BIGINT;
