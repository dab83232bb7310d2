//! Recordings: starting and stopping them (hosts and admins), the media side reporting them
//! finished, reading them (with their index) from the event log, and deleting them.

use crate::access::{TokenRuns, check_token};
use crate::error::{DomainError, ErrorCode};
use crate::event::Event;
use crate::ids::{MeetingId, RecordingId};
use crate::meeting::Meeting;
use crate::ops::{self, RecordingOutcome};
use crate::participant::Role;
use crate::recording::{self, Recording, RecordingState};

use super::{Caller, MAX_PAGE, Meetings, Needs, Result};

impl Meetings {
    /// A host (or an admin) starts recording the live meeting.
    pub async fn start_recording(&self, id: &MeetingId, caller: &Caller) -> Result<Recording> {
        self.require_recorder()?;
        let (_, recording_id) = self
            .mutate(id, caller, Needs::default(), |tx, loaded| {
                ops::start_recording(tx, &loaded.actor, &mut self.rng())
            })
            .await?;
        self.find_recording(id, &recording_id).await
    }

    /// A host (or an admin) stops the running recording.
    pub async fn stop_recording(
        &self,
        id: &MeetingId,
        caller: &Caller,
        recording_id: &RecordingId,
    ) -> Result<Recording> {
        self.meeting(id).await?;
        self.find_recording(id, recording_id).await?;
        self.mutate(id, caller, Needs::default(), |tx, loaded| {
            ops::stop_recording(tx, &loaded.actor, recording_id)
        })
        .await?;
        self.find_recording(id, recording_id).await
    }

    /// The meeting's recordings, oldest first (a host or an admin).
    pub async fn recordings(&self, id: &MeetingId, caller: &Caller) -> Result<Vec<Recording>> {
        self.require_recording_rights(id, caller).await?;
        Ok(recording::recordings(&self.whole_log(id).await?))
    }

    /// One recording with its index (a host or an admin).
    pub async fn recording(
        &self,
        id: &MeetingId,
        caller: &Caller,
        recording_id: &RecordingId,
    ) -> Result<Recording> {
        self.require_recording_rights(id, caller).await?;
        self.find_recording(id, recording_id).await
    }

    /// The media side says how recording `recording_id` ended. A recording already ready or
    /// failed stays as it is (a report that comes twice, or after a restart's recovery).
    pub async fn finish_recording(
        &self,
        id: &MeetingId,
        recording_id: &RecordingId,
        outcome: RecordingOutcome,
    ) -> Result<Recording> {
        let found = self.find_recording(id, recording_id).await?;
        if matches!(found.state, RecordingState::Ready | RecordingState::Failed) {
            return Ok(found);
        }
        self.mutate(id, &Caller::Admin, Needs::default(), |tx, _| {
            ops::finish_recording(tx, recording_id, outcome.clone());
            Ok(())
        })
        .await?;
        self.find_recording(id, recording_id).await
    }

    /// A host (or an admin) deletes a recording that is not running; answers what it was, so
    /// that its files can be removed.
    pub async fn delete_recording(
        &self,
        id: &MeetingId,
        caller: &Caller,
        recording_id: &RecordingId,
    ) -> Result<Recording> {
        let found = self.recording(id, caller, recording_id).await?;
        if found.state == RecordingState::Processing {
            return Err(DomainError::new(
                ErrorCode::InvalidState,
                "the recording's files are still being finished; delete it once it is ready",
            )
            .into());
        }
        self.mutate(id, &Caller::Admin, Needs::default(), |tx, _| {
            ops::delete_recording(tx, recording_id)
        })
        .await?;
        Ok(found)
    }

    /// Every meeting with a recording running, as the store holds them (recovery at start: a
    /// recording the server was writing when it stopped).
    pub async fn running_recordings(&self) -> Result<Vec<Meeting>> {
        Ok(self.store.recording_meetings().await?)
    }

    /// The recordings of meetings that are not running now and have not been finished
    /// (stopped while the server was down before its files were reported).
    pub async fn unfinished_recordings(&self, id: &MeetingId) -> Result<Vec<Recording>> {
        Ok(recording::recordings(&self.whole_log(id).await?)
            .into_iter()
            .filter(|r| {
                matches!(
                    r.state,
                    RecordingState::Recording | RecordingState::Processing
                )
            })
            .collect())
    }

    async fn find_recording(
        &self,
        id: &MeetingId,
        recording_id: &RecordingId,
    ) -> Result<Recording> {
        recording::recordings(&self.whole_log(id).await?)
            .into_iter()
            .find(|r| r.id == *recording_id)
            .ok_or_else(|| DomainError::code(ErrorCode::RecordingNotFound).into())
    }

    /// Admins, and a meeting's hosts (with a token of its current run, or of the last one once
    /// it ended), not banned, read and delete its recordings.
    async fn require_recording_rights(&self, id: &MeetingId, caller: &Caller) -> Result<Meeting> {
        let meeting = self.meeting(id).await?;
        let Caller::Participant {
            identity,
            instance,
            epoch,
        } = caller
        else {
            return Ok(meeting);
        };
        let holder = self
            .committed_person(id, identity)
            .await?
            .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
        check_token(
            &meeting,
            &holder,
            instance,
            *epoch,
            TokenRuns::OrEarlierForHostOfEndedMeeting,
        )?;
        if holder.role != Role::Host || holder.is_banned_at(self.now()) {
            return Err(DomainError::new(
                ErrorCode::Forbidden,
                "only the meeting's hosts and admins may see its recordings",
            )
            .into());
        }
        Ok(meeting)
    }

    /// Refuses when the media engine does not record.
    pub(super) fn require_recorder(&self) -> Result<()> {
        if self.media.records() {
            Ok(())
        } else {
            Err(DomainError::new(
                ErrorCode::Unavailable,
                "recording needs the embedded media engine: this deployment's media runs on an external LiveKit",
            )
            .into())
        }
    }

    /// The meeting's whole event log, in order (empty for a meeting that is not there: the
    /// callers have read the meeting, or ask only about one they know).
    async fn whole_log(&self, id: &MeetingId) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        loop {
            let after = events.last().map_or(0, |e: &Event| e.seq);
            let page = self.store.events_after(id, after, MAX_PAGE).await?;
            let last = (page.len() as u32) < MAX_PAGE;
            events.extend(page);
            if last {
                return Ok(events);
            }
        }
    }
}
