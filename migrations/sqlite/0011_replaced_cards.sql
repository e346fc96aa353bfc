-- Cards drbot posted again because the old one could not be edited (deleted, or no longer
-- editable): the old message id still belongs to its run, so a click made on it just before
-- it went (or on an old card still shown) is matched to the run, not refused as foreign. The
-- old card is no longer edited.
CREATE TABLE replaced_cards (
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    run_id BIGINT NOT NULL REFERENCES runs (id),
    replaced_by TEXT NOT NULL,
    replaced_at BIGINT NOT NULL,
    PRIMARY KEY (platform, channel, message_id)
);
