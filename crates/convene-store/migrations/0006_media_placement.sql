-- convene schema, version 6: where each meeting's media runs when several nodes share this database
-- and each runs the embedded SFU (PostgreSQL; docs/multi-node.md). A node is named by its public
-- signalling URL (each node has its own CONVENE_PUBLIC_URL), so a node that restarts is the same
-- node and keeps its rooms.

CREATE TABLE media_nodes (
    rtc_url     TEXT   NOT NULL PRIMARY KEY,
    -- The process that renews the lease (random at each start): two processes renewing one URL
    -- are a misconfiguration the log names.
    instance    TEXT   NOT NULL,
    -- People connected to its media engine at the last renewal.
    load        BIGINT NOT NULL,
    -- Until when (ms since the Unix epoch) the node is taken as alive; renewed every second or so.
    lease_until BIGINT NOT NULL
);

-- The node holding each media room: written at the room's first join, moved only when its node's
-- lease has run out, dropped by its node once the room has been empty a while.
CREATE TABLE media_rooms (
    room_name TEXT   NOT NULL PRIMARY KEY,
    rtc_url   TEXT   NOT NULL,
    placed_at BIGINT NOT NULL
);

CREATE INDEX media_rooms_rtc_url ON media_rooms (rtc_url);
