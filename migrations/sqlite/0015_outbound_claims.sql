-- A chat post's claim lasts until `claimed_until` (ms since the epoch) and is renewed while
-- the post is under way: another process takes an unfinished claim over (and first looks for
-- the post in the channel) only once it has lapsed, so a post that is slow, not lost, is never
-- made a second time. Claims made before this column existed have none and count as lapsed.
ALTER TABLE outbound ADD COLUMN claimed_until BIGINT;
