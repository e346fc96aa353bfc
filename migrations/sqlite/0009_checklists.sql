-- Checklists posted with `/dr checklist <name>`: each instance keeps a copy of the items it was
-- created with (config may change later), who ticked what and when, and the chat messages
-- showing it, so a click is honoured only on a message of the instance it names.
CREATE TABLE checklist_instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    items TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The items currently ticked (unticking deletes the row; the audit log keeps the history).
CREATE TABLE checklist_ticks (
    instance_id BIGINT NOT NULL REFERENCES checklist_instances (id),
    item_id TEXT NOT NULL,
    ticked_by TEXT NOT NULL,
    ticked_at BIGINT NOT NULL,
    PRIMARY KEY (instance_id, item_id)
);

-- Chat messages showing an instance (a long checklist spans several, one per `part`).
CREATE TABLE checklist_messages (
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    instance_id BIGINT NOT NULL REFERENCES checklist_instances (id),
    part BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (platform, channel, message_id)
);
CREATE UNIQUE INDEX checklist_messages_one_part
    ON checklist_messages (platform, channel, instance_id, part);
