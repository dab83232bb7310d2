-- convene schema, version 7: the recording a meeting has running, if any (serde JSON of
-- convene_core::meeting::ActiveRecording). Everything else about recordings (their files, state
-- and index) is in the meeting's event log.
ALTER TABLE meetings ADD COLUMN recording TEXT;
-- The meetings recording now, found at start without reading every meeting.
CREATE INDEX meetings_recording ON meetings (id) WHERE recording IS NOT NULL;
