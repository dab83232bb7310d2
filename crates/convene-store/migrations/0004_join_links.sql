-- convene schema, version 4: one-time join links (seed 003, the BigBlueButton surface).
-- A join link's nonce is recorded here when the link is exchanged; the primary key makes the
-- exchange single-use even when two nodes try at once. Rows are dropped once the link has expired
-- (an expired link is refused by its signature check anyway).

CREATE TABLE used_join_links (
    nonce      TEXT   NOT NULL PRIMARY KEY,
    -- When the link expires (ms since the Unix epoch); the row may be forgotten after that.
    expires_at BIGINT NOT NULL
);

CREATE INDEX used_join_links_expires_at ON used_join_links (expires_at);
