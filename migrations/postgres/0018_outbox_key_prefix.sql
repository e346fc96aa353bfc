-- Progress of a customer email send counts its rows by key prefix (`key LIKE 'email:run:7:…%'`)
-- twice a second; outbox rows are kept, so without this index (usable by LIKE whatever the
-- database's collation) each count read the whole table.
CREATE INDEX outbox_key_prefix ON outbox (key text_pattern_ops);
