-- The rows still to deliver, in id order: a claim takes the first due ones from here without
-- visiting the delivered and failed rows or sorting the pending ones (a mass send has many).
CREATE INDEX outbox_open ON outbox (id) WHERE state IN ('pending', 'sending');
