-- Customer email campaigns: the message of one mass send (`email_customers`), rendered once
-- with a slot marker for each recipient value (JSON). Its outbox rows (channel `email`) name
-- the campaign and hold only the recipient's own values; it is written in the same
-- transaction as they are.
CREATE TABLE email_campaigns (
    id BIGSERIAL PRIMARY KEY,
    -- The send it belongs to and its variant, e.g. `email:run:7:step:3:named`.
    key TEXT NOT NULL UNIQUE,
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
