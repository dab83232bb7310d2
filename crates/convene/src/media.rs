//! The seam between the core and the embedded media engine: the core's [`MediaEngine`] port
//! carried out on the SFU, and the SFU's [`Admission`] answered by the core (a token is not
//! enough: the meeting must be live, the person admitted in this run, not banned, under capacity).
//! Media events come back into the meeting's event log.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use convene_core::ErrorCode;
use convene_core::event::TrackSelector;
use convene_core::ids::{DisplayName, Identity, RoomName};
use convene_core::meeting::{MeetingSettings, MeetingStatus, Mode, WaitingPolicy};
use convene_core::ops::MediaCommand;
use convene_core::participant::Role;
use convene_core::ports::MediaEngine;
use convene_core::service::{Caller, MediaReport, Meetings, NewMeeting, ServiceError};
use convene_sfu::{Admission, Admitted, MediaEvent, Permission, Refusal, SfuControl, SfuError};
use futures::future::BoxFuture;
use livekit_protocol as proto;

/// The media permissions a role carries (the same as its token's grants).
pub fn permission_for(role: Role) -> Permission {
    Permission {
        can_publish: role.can_publish(),
        can_subscribe: true,
        can_publish_data: role.can_publish(),
        hidden: false,
        room_admin: role == Role::Host,
    }
}

/// The core's media commands, carried out on the embedded SFU.
pub struct EmbeddedMedia {
    control: SfuControl,
}

impl EmbeddedMedia {
    pub fn new(control: SfuControl) -> Self {
        Self { control }
    }

    async fn mute(
        &self,
        room: &str,
        identity: &str,
        track: &TrackSelector,
        muted: bool,
    ) -> Result<(), SfuError> {
        let sids: Vec<String> = match track {
            TrackSelector::Track(sid) => vec![sid.clone()],
            TrackSelector::Audio | TrackSelector::Video => {
                let kind = if *track == TrackSelector::Audio {
                    proto::TrackType::Audio
                } else {
                    proto::TrackType::Video
                };
                let info = self.control.get_participant(room, identity).await?;
                info.tracks
                    .iter()
                    .filter(|t| t.r#type == kind as i32)
                    .map(|t| t.sid.clone())
                    .collect()
            }
        };
        for sid in sids {
            self.control
                .mute_published_track(room, identity, &sid, muted)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl MediaEngine for EmbeddedMedia {
    async fn apply(&self, commands: &[MediaCommand]) {
        for command in commands {
            let result = match command {
                MediaCommand::Disconnect { room, identity } => {
                    self.control
                        .remove_participant(room.as_str(), identity.as_str(), "PARTICIPANT_REMOVED")
                        .await
                }
                MediaCommand::SetRole {
                    room,
                    identity,
                    role,
                } => {
                    self.control
                        .update_permission(room.as_str(), identity.as_str(), permission_for(*role))
                        .await
                }
                MediaCommand::Mute {
                    room,
                    identity,
                    track,
                    muted,
                } => {
                    self.mute(room.as_str(), identity.as_str(), track, *muted)
                        .await
                }
                MediaCommand::CloseRoom { room } => self.control.close_room(room.as_str()).await,
            };
            match result {
                // Not connected to media right now: the stored state still applies at the next join.
                Ok(()) | Err(SfuError::NotFound(_)) => {}
                Err(e) => tracing::warn!(?command, error = %e, "media command failed"),
            }
        }
    }
}

/// How many media reports may wait to be recorded before new ones are dropped (and logged).
const REPORT_QUEUE: usize = 4096;

/// Answers the SFU's admission questions from the core.
#[derive(Default)]
pub struct CoreAdmission {
    meetings: OnceLock<Arc<Meetings>>,
    reports: OnceLock<tokio::sync::mpsc::Sender<(RoomName, MediaReport)>>,
}

impl CoreAdmission {
    /// Completes the wiring once the core service exists (it needs the SFU's control handle
    /// first), and starts the task that records media reports in order, off the engine's task.
    pub fn attach(&self, meetings: Arc<Meetings>) {
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<(RoomName, MediaReport)>(REPORT_QUEUE);
        let recorder = meetings.clone();
        tokio::spawn(async move {
            while let Some((room, report)) = receiver.recv().await {
                if let Err(e) = recorder.media_report(&room, report).await {
                    tracing::warn!(error = %e, room = %room, "could not record a media event");
                }
            }
        });
        let _ = self.reports.set(sender);
        let _ = self.meetings.set(meetings);
    }

    async fn decide(&self, token: &str) -> Result<Admitted, Refusal> {
        let refuse = |status: u16, message: String| Refusal { status, message };
        let meetings = self
            .meetings
            .get()
            .ok_or_else(|| refuse(503, "the server is starting".into()))?;
        let issuer = convene_token::issuer(token).map_err(|e| refuse(401, e.to_string()))?;
        let key = match meetings.api_key(&issuer).await {
            Ok(Some(key)) if key.is_active() => key,
            Ok(_) => return Err(refuse(401, "unknown or revoked API key".into())),
            Err(e) => {
                tracing::error!(error = %e, "admission: cannot read API keys");
                return Err(refuse(503, "temporarily unavailable".into()));
            }
        };
        let verified = match convene_token::verify_participant(
            token,
            &key.secret,
            meetings.now(),
            &[convene_token::TokenKind::Access],
        ) {
            Ok(verified) => verified,
            Err(convene_token::TokenError::WrongKind) => {
                let app_token = convene_token::verify_livekit(token, &key.secret, meetings.now())
                    .map_err(|e| refuse(401, e.to_string()))?;
                return self.admit_livekit_token(meetings, app_token).await;
            }
            Err(e) => return Err(refuse(401, e.to_string())),
        };
        let admission = meetings
            .media_admission(
                &verified.meeting,
                &verified.identity,
                &verified.instance,
                verified.epoch,
            )
            .await
            .map_err(|e| {
                let code = e.code();
                let status = match code {
                    ErrorCode::InvalidToken => 401,
                    ErrorCode::Internal | ErrorCode::Busy => 503,
                    _ => 403,
                };
                refuse(status, e.to_string())
            })?;
        if admission.meeting.room_name.as_str() != verified.room {
            return Err(refuse(401, "the token names another room".into()));
        }
        let participant = admission.participant;
        Ok(Admitted {
            room: admission.meeting.room_name.to_string(),
            identity: participant.identity.to_string(),
            name: participant.name.to_string(),
            metadata:
                serde_json::json!({ "role": participant.role, "meeting_id": admission.meeting.id })
                    .to_string(),
            permission: permission_for(participant.role),
        })
    }
}

impl CoreAdmission {
    /// A plain LiveKit token minted by an app that holds an API secret (as with a LiveKit server):
    /// the app is trusted to place the person, the room is created on first join (policy `open`),
    /// and the role follows the grants. Stored bans still apply, and the core admits as usual.
    async fn admit_livekit_token(
        &self,
        meetings: &Arc<Meetings>,
        token: convene_token::LiveKitToken,
    ) -> Result<Admitted, Refusal> {
        let refuse = |e: ServiceError| {
            let status = match e.code() {
                ErrorCode::InvalidRequest => 401,
                ErrorCode::Internal | ErrorCode::Busy => 503,
                _ => 403,
            };
            Refusal {
                status,
                message: e.to_string(),
            }
        };
        let invalid = |e: convene_core::ValidationError| Refusal {
            status: 401,
            message: e.to_string(),
        };
        let room = RoomName::parse(&token.video.room).map_err(invalid)?;
        let identity = Identity::parse(&token.identity).map_err(invalid)?;
        let name = DisplayName::parse(if token.name.is_empty() {
            &token.identity
        } else {
            &token.name
        })
        .map_err(invalid)?;
        let role = if token.video.room_admin {
            Role::Host
        } else if token.video.can_publish() {
            Role::Speaker
        } else {
            Role::Viewer
        };
        let room_name = room.clone();
        let meeting = meetings
            .ensure_room(&room, || NewMeeting {
                id: None,
                digits: None,
                room_name: Some(room_name.clone()),
                settings: MeetingSettings::new(
                    DisplayName::parse(room_name.as_str()).unwrap_or_else(|_| name.clone()),
                    Mode::Meeting,
                    WaitingPolicy::Open,
                ),
                host_credential: None,
                participant_credential: None,
                viewer_credential: None,
            })
            .await
            .map_err(refuse)?;
        if meeting.status == MeetingStatus::Ended {
            // LiveKit creates a deleted room again on the next join.
            meetings
                .start_meeting(&meeting.id, &Caller::Admin)
                .await
                .map_err(refuse)?;
        }
        let (meeting, participant) = meetings
            .enter_trusted(&meeting.id, identity, name, role)
            .await
            .map_err(refuse)?;
        let caller = Caller::Participant {
            identity: participant.identity.clone(),
            instance: meeting.run.instance_id.clone(),
            epoch: participant.epoch,
        };
        let (meeting, participant) = meetings.join(&meeting.id, &caller).await.map_err(refuse)?;
        let admission = meetings
            .media_admission(
                &meeting.id,
                &participant.identity,
                &meeting.run.instance_id,
                participant.epoch,
            )
            .await
            .map_err(refuse)?;
        let participant = admission.participant;
        let metadata = if token.metadata.is_empty() {
            serde_json::json!({ "role": participant.role, "meeting_id": admission.meeting.id })
                .to_string()
        } else {
            token.metadata
        };
        Ok(Admitted {
            room: admission.meeting.room_name.to_string(),
            identity: participant.identity.to_string(),
            name: participant.name.to_string(),
            metadata,
            permission: Permission {
                can_subscribe: token.video.can_subscribe(),
                hidden: token.video.hidden,
                ..permission_for(participant.role)
            },
        })
    }
}

impl Admission for CoreAdmission {
    fn admit(&self, token: &str) -> BoxFuture<'_, Result<Admitted, Refusal>> {
        let token = token.to_owned();
        Box::pin(async move { self.decide(&token).await })
    }

    fn on_event(&self, event: MediaEvent) {
        let Some(reports) = self.reports.get() else {
            return;
        };
        let (room, report) = match event {
            MediaEvent::ParticipantJoined { room, identity, .. } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::Connected { identity }),
            ),
            MediaEvent::ParticipantLeft { room, identity, .. } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::Disconnected { identity }),
            ),
            MediaEvent::TrackPublished {
                room,
                identity,
                track_sid,
                kind,
                ..
            } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::TrackPublished {
                    identity,
                    track_sid,
                    kind,
                }),
            ),
            MediaEvent::TrackUnpublished {
                room,
                identity,
                track_sid,
            } => (
                room,
                Identity::parse(&identity).map(|identity| MediaReport::TrackUnpublished {
                    identity,
                    track_sid,
                }),
            ),
        };
        let (Ok(room), Ok(report)) = (RoomName::parse(&room), report) else {
            return;
        };
        if reports.try_send((room, report)).is_err() {
            tracing::warn!("media report queue full: a media event was not recorded");
        }
    }
}
