-- Webhooks: endpoints and the durable outbox of deliveries (see convene_core::webhook).
-- Delivery rows are written by the same transaction that appends the events they carry.

CREATE TABLE webhook_endpoints (
    -- `deployment:<url>` (one per configured URL) or `meeting:<meeting id>` (a meeting's own URL).
    id          TEXT   NOT NULL PRIMARY KEY,
    url         TEXT   NOT NULL,
    -- NULL: every meeting's events.
    meeting_id  TEXT   REFERENCES meetings (id),
    active      BIGINT NOT NULL CHECK (active IN (0, 1)),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT   NOT NULL REFERENCES webhook_endpoints (id),
    meeting_id      TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    -- pending | delivered | failed
    status          TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    -- A sender holds the delivery until then (several nodes share one outbox).
    lease_until     BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, meeting_id, seq),
    FOREIGN KEY (meeting_id, seq) REFERENCES events (meeting_id, seq)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
-- A lane's first pending delivery: (endpoint, meeting, 'pending', lowest seq).
CREATE INDEX webhook_deliveries_lane ON webhook_deliveries (endpoint_id, meeting_id, status, seq);
CREATE INDEX webhook_deliveries_meeting ON webhook_deliveries (meeting_id, seq);
