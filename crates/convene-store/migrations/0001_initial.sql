-- convene schema, version 1. ONE migration set for SQLite and PostgreSQL: only portable SQL
-- (TEXT, BIGINT, 0/1 integers for booleans, JSON kept as TEXT), so the two schemas cannot drift.
-- Timestamps are milliseconds since the Unix epoch (convene_core::Timestamp).

CREATE TABLE meetings (
    id           TEXT   NOT NULL PRIMARY KEY,
    room_name    TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    -- Sequence number of the last event; the optimistic-concurrency version.
    last_seq     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    -- The current run.
    instance_id  TEXT   NOT NULL,
    run_number   BIGINT NOT NULL,
    opened_at    BIGINT NOT NULL,
    live_at      BIGINT,
    ended_at     BIGINT,
    -- serde JSON of convene_core::meeting::MeetingSettings and Credentials.
    settings     TEXT   NOT NULL,
    credentials  TEXT   NOT NULL,
    CONSTRAINT meetings_room_name_key UNIQUE (room_name),
    CONSTRAINT meetings_last_seq_check CHECK (last_seq >= 0)
);

CREATE TABLE participants (
    meeting_id      TEXT   NOT NULL REFERENCES meetings (id),
    identity        TEXT   NOT NULL,
    name            TEXT   NOT NULL,
    role            TEXT   NOT NULL,
    state           TEXT   NOT NULL,
    hand_raised     BIGINT NOT NULL CHECK (hand_raised IN (0, 1)),
    invited         BIGINT NOT NULL CHECK (invited IN (0, 1)),
    media_connected BIGINT NOT NULL CHECK (media_connected IN (0, 1)),
    admitted_in     TEXT,
    banned_until    BIGINT,
    epoch           BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (meeting_id, identity)
);

CREATE INDEX participants_meeting_state ON participants (meeting_id, state);

CREATE TABLE events (
    meeting_id  TEXT   NOT NULL REFERENCES meetings (id),
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    instance_id TEXT   NOT NULL,
    -- EventKind's serde tag (`participant.admitted`) and content (`data`), so it round-trips exactly.
    type        TEXT   NOT NULL,
    audience    TEXT   NOT NULL,
    data        TEXT   NOT NULL,
    PRIMARY KEY (meeting_id, seq)
);

CREATE TABLE api_keys (
    id          TEXT   NOT NULL PRIMARY KEY,
    secret      TEXT   NOT NULL,
    description TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE auth_failures (
    scope           TEXT   NOT NULL,
    subject         TEXT   NOT NULL,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT,
    PRIMARY KEY (scope, subject)
);
