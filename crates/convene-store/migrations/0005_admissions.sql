-- convene schema, version 5: admitting everyone waiting is one row, not one update per guest.
--
-- A meeting counts its admissions of everyone waiting (`admission_gen`); a person who enters the
-- waiting room is written with the meeting's count at that moment (`waiting_gen`). Admitting
-- everyone waiting records one `admissions` row for the current count (the run they are admitted
-- to, and when) and moves the count on. So a row still marked `waiting` whose `waiting_gen` has
-- an admission was admitted by it: the `people` view reads every participant that way, and every
-- read goes through it. The person's next change writes the row as the view shows it.

ALTER TABLE meetings ADD COLUMN admission_gen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE participants ADD COLUMN waiting_gen BIGINT NOT NULL DEFAULT 0;

CREATE TABLE admissions (
    meeting_id  TEXT   NOT NULL REFERENCES meetings (id),
    gen         BIGINT NOT NULL,
    -- The run they were admitted to, and when (ms since the Unix epoch).
    instance_id TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (meeting_id, gen)
);

CREATE INDEX participants_waiting ON participants (meeting_id, state, waiting_gen);

CREATE VIEW people AS
SELECT p.meeting_id, p.identity, p.name, p.role,
       CASE WHEN a.gen IS NULL THEN p.state ELSE 'admitted' END AS state,
       p.hand_raised, p.invited, p.media_connected,
       CASE WHEN a.gen IS NULL THEN p.admitted_in ELSE a.instance_id END AS admitted_in,
       p.banned_until, p.epoch, p.created_at,
       CASE WHEN a.gen IS NULL THEN p.updated_at ELSE a.at END AS updated_at
FROM participants p
LEFT JOIN admissions a
       ON p.state = 'waiting' AND a.meeting_id = p.meeting_id AND a.gen = p.waiting_gen;
