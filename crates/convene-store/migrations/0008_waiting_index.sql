-- convene schema, version 8: the participants' secondary indexes hold only the people waiting.
-- A join across many meetings wrote a leaf page of each of the three participants indexes per
-- meeting in every commit (the group commit's pages, counted in its WAL); the ones not waiting are
-- found through the primary key (meeting_id, identity) instead. (meeting_id, state) was already a
-- prefix of participants_waiting and no query needs it.
DROP INDEX participants_meeting_state;
DROP INDEX participants_waiting;
-- Everyone waiting for the meeting's current admission count (queries name the state literally,
-- so both databases use this partial index).
CREATE INDEX participants_waiting ON participants (meeting_id, waiting_gen) WHERE state = 'waiting';
