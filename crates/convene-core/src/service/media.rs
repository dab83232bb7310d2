//! The media engine's side of the service: admission before every join (a token is not enough),
//! the room's capacity, and what the engine reports coming back into the meeting's log.

use crate::access::may_connect_media;
use crate::error::{DomainError, ErrorCode};
use crate::ids::{Identity, InstanceId, MeetingId, RoomName};
use crate::meeting::Meeting;
use crate::ops;
use crate::participant::{Participant, Role};

use super::{Caller, Meetings, Needs, Result};

/// What the media engine reports.
#[derive(Clone, Debug)]
pub enum MediaReport {
    Connected {
        identity: Identity,
    },
    Disconnected {
        identity: Identity,
    },
    TrackPublished {
        identity: Identity,
        track_sid: String,
        kind: String,
    },
    TrackUnpublished {
        identity: Identity,
        track_sid: String,
    },
}

/// Who the media engine should let in, and with which role.
#[derive(Clone, Debug)]
pub struct MediaAdmission {
    pub meeting: Meeting,
    pub participant: Participant,
}

impl Meetings {
    /// The media engine's admission check: a token is not enough. The meeting must be live, the
    /// person admitted in this run and not banned, and the room under capacity.
    pub async fn media_admission(
        &self,
        id: &MeetingId,
        identity: &Identity,
        instance: &InstanceId,
        epoch: u32,
    ) -> Result<MediaAdmission> {
        let (meeting, participant) = self
            .check_participant_token(id, identity, instance, epoch)
            .await?;
        may_connect_media(&meeting, &participant, self.now())?;
        self.check_media_capacity(&meeting, &participant).await?;
        Ok(MediaAdmission {
            meeting,
            participant,
        })
    }

    /// Whether `participant` may take a media connection: in a meeting with a capacity, fails
    /// with `meeting_full` when that many others already hold one. Hosts are never refused, and a
    /// person already connected keeps their place.
    pub async fn check_media_capacity(
        &self,
        meeting: &Meeting,
        participant: &Participant,
    ) -> Result<()> {
        let Some(capacity) = meeting.settings.capacity else {
            return Ok(());
        };
        if participant.role == Role::Host || participant.media_connected {
            return Ok(());
        }
        let connected = self
            .store
            .count_media_connected(&meeting.id, &participant.identity)
            .await?;
        if connected >= u64::from(capacity) {
            return Err(DomainError::code(ErrorCode::MeetingFull).into());
        }
        Ok(())
    }

    /// Records what the media engine saw (connections and tracks) in the meeting's log.
    pub async fn media_report(&self, room: &RoomName, report: MediaReport) -> Result<()> {
        let Some(meeting) = self.committed_meeting_by_room(room).await? else {
            return Ok(());
        };
        let identity = match &report {
            MediaReport::Connected { identity }
            | MediaReport::Disconnected { identity }
            | MediaReport::TrackPublished { identity, .. }
            | MediaReport::TrackUnpublished { identity, .. } => identity.clone(),
        };
        let needs = Needs {
            target: Some(identity),
            ..Needs::default()
        };
        self.mutate(&meeting.id, &Caller::Admin, needs, |tx, loaded| {
            let Some(target) = loaded.target else {
                return Ok(());
            };
            match report.clone() {
                MediaReport::Connected { .. } => ops::media_presence(tx, target, true),
                MediaReport::Disconnected { .. } => ops::media_presence(tx, target, false),
                MediaReport::TrackPublished {
                    identity,
                    track_sid,
                    kind,
                } => ops::media_track(tx, identity, track_sid, Some(kind)),
                MediaReport::TrackUnpublished {
                    identity,
                    track_sid,
                } => ops::media_track(tx, identity, track_sid, None),
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }
}
