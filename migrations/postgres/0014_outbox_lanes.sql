-- The rows still to deliver, by channel and in id order: each outbox lane (customer email in
-- bulk; status page and chat) claims the first due rows of its own channels from here, so a
-- mass send's rows are never visited by the lane that posts status updates.
CREATE INDEX outbox_open_channel ON outbox (channel, id) WHERE state IN ('pending', 'sending');
