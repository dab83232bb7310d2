//! The core's [`MediaEngine`] port carried out on an external LiveKit deployment through its
//! server API (RoomService and Egress, with the official `livekit-api` client). LiveKit cannot ask
//! convene before a join, so admission there rests on the media token (short-lived, minted only
//! for an admitted person of a live meeting, see `MediaTokens::LiveKit`) plus the join check in
//! `livekit_webhook`; removal, bans, role changes, mutes and the end of a meeting act here.
//! Recording starts a room composite egress (`crate::egress` names its file after the recording)
//! and stops the room's running egresses of that recording; the deployment's egress webhooks
//! finish it. A recording LiveKit would not start is reported failed at once.
//!
//! `apply` never waits on the network: commands go into bounded per-lane queues (a room always
//! maps to the same lane, so its commands keep their order) and each lane's task carries them out,
//! retrying transient failures a bounded number of times with backoff. "Not found" counts as done:
//! a person who is not connected has nothing to disconnect, and the stored state still applies.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use convene_core::access::MediaRights;
use convene_core::apikey::ApiSecret;
use convene_core::event::{StopReason, TrackSelector};
use convene_core::ids::{MeetingId, RecordingId};
use convene_core::ops::{MediaCommand, RecordingOutcome};
use convene_core::participant::Role;
use convene_core::ports::MediaEngine;
use convene_core::service::Meetings;
use livekit_api::services::egress::{
    EgressClient, EgressListFilter, EgressListOptions, EgressOutput, RoomCompositeOptions, encoding,
};
use livekit_api::services::room::{CreateRoomOptions, RoomClient, UpdateParticipantOptions};
use livekit_api::services::{ServerError, ServiceError};
use livekit_protocol as proto;
use tokio::sync::mpsc;

use crate::egress;

/// Lanes (tasks) carrying out commands; a room always uses the same one.
const LANES: usize = 8;
/// Commands that may wait per lane before new ones are dropped (and logged).
const LANE_QUEUE: usize = 512;
/// Lifetime of a media token for an external LiveKit: LiveKit checks it only when a client
/// connects (and refreshes it itself for a connected client), so a short one keeps a token that
/// leaked, or that a person removed since holds, from opening a new connection for long.
pub const ACCESS_TTL: Duration = Duration::from_secs(10 * 60);
/// Time allowed for one RoomService request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one Egress request (LiveKit answers a start once an egress worker took it).
pub const EGRESS_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How often and how patiently a failed call is tried again.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all (at least 1).
    pub attempts: u32,
    /// Wait before the second try; doubled before each further one.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 4 tries, waiting 250 ms, 500 ms and 1 s between them.
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
        }
    }
}

/// Why a RoomService call failed, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The room, participant or track is not there: nothing to do.
    NotFound,
    /// Trying again will not help (refused credentials, a request the server rejects).
    Permanent(String),
    /// Worth another try (network, timeout, server error).
    Transient(String),
}

/// Sorts a `livekit-api` error by whether it is worth retrying.
pub fn classify(error: &ServiceError) -> CallFailure {
    match error {
        ServiceError::Twirp(ServerError::Twirp(code)) => match code.code.as_str() {
            "not_found" => CallFailure::NotFound,
            "invalid_argument"
            | "malformed"
            | "bad_route"
            | "permission_denied"
            | "unauthenticated"
            | "failed_precondition"
            | "already_exists"
            | "out_of_range"
            | "unimplemented" => CallFailure::Permanent(code.to_string()),
            _ => CallFailure::Transient(code.to_string()),
        },
        ServiceError::Twirp(ServerError::Request(e)) => CallFailure::Transient(e.to_string()),
        ServiceError::Twirp(other) => CallFailure::Permanent(other.to_string()),
        other => CallFailure::Permanent(other.to_string()),
    }
}

/// The RoomService calls convene makes (a seam so the command logic is tested without a server).
#[async_trait]
pub trait RoomApi: Send + Sync + 'static {
    async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), CallFailure>;
    async fn update_permission(
        &self,
        room: &str,
        identity: &str,
        permission: proto::ParticipantPermission,
    ) -> Result<(), CallFailure>;
    async fn get_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<proto::ParticipantInfo, CallFailure>;
    async fn mute_published_track(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<(), CallFailure>;
    async fn delete_room(&self, room: &str) -> Result<(), CallFailure>;
    /// CreateRoom with LiveKit's defaults (an existing room is left as it is).
    async fn create_room(&self, room: &str) -> Result<(), CallFailure>;
}

#[async_trait]
impl RoomApi for RoomClient {
    async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), CallFailure> {
        RoomClient::remove_participant(self, room, identity)
            .await
            .map_err(|e| classify(&e))
    }
    async fn update_permission(
        &self,
        room: &str,
        identity: &str,
        permission: proto::ParticipantPermission,
    ) -> Result<(), CallFailure> {
        let options = UpdateParticipantOptions {
            permission: Some(permission),
            ..UpdateParticipantOptions::default()
        };
        self.update_participant(room, identity, options)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
    async fn get_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<proto::ParticipantInfo, CallFailure> {
        RoomClient::get_participant(self, room, identity)
            .await
            .map_err(|e| classify(&e))
    }
    async fn mute_published_track(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<(), CallFailure> {
        RoomClient::mute_published_track(self, room, identity, track_sid, muted)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
    async fn delete_room(&self, room: &str) -> Result<(), CallFailure> {
        RoomClient::delete_room(self, room)
            .await
            .map_err(|e| classify(&e))
    }
    async fn create_room(&self, room: &str) -> Result<(), CallFailure> {
        RoomClient::create_room(self, room, CreateRoomOptions::default())
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

/// The Egress calls convene makes (a seam, as [`RoomApi`] is).
#[async_trait]
pub trait EgressApi: Send + Sync + 'static {
    /// StartRoomCompositeEgress: the room in the grid layout, to one MP4 file at `filepath`.
    async fn start_room_composite(
        &self,
        room: &str,
        filepath: &str,
    ) -> Result<proto::EgressInfo, CallFailure>;
    /// ListEgress: the room's egresses that have not ended.
    async fn list_active(&self, room: &str) -> Result<Vec<proto::EgressInfo>, CallFailure>;
    /// StopEgress.
    async fn stop_egress(&self, egress_id: &str) -> Result<(), CallFailure>;
}

#[async_trait]
impl EgressApi for EgressClient {
    async fn start_room_composite(
        &self,
        room: &str,
        filepath: &str,
    ) -> Result<proto::EgressInfo, CallFailure> {
        let output = EgressOutput::File(proto::EncodedFileOutput {
            file_type: proto::EncodedFileType::Mp4 as i32,
            filepath: filepath.to_owned(),
            ..proto::EncodedFileOutput::default()
        });
        let options = RoomCompositeOptions {
            layout: egress::LAYOUT.to_owned(),
            // The embedded engine's composite is 1280x720 too.
            encoding: encoding::H264_720P_30,
            ..RoomCompositeOptions::default()
        };
        self.start_room_composite_egress(room, vec![output], options)
            .await
            .map_err(|e| classify(&e))
    }
    async fn list_active(&self, room: &str) -> Result<Vec<proto::EgressInfo>, CallFailure> {
        let options = EgressListOptions {
            filter: EgressListFilter::Room(room.to_owned()),
            active: true,
            page_token: None,
        };
        self.list_egress(options).await.map_err(|e| classify(&e))
    }
    async fn stop_egress(&self, egress_id: &str) -> Result<(), CallFailure> {
        EgressClient::stop_egress(self, egress_id)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e))
    }
}

/// Where a recording LiveKit did not start is reported: the core service, once it exists.
#[async_trait]
pub trait RecordingReports: Send + Sync + 'static {
    /// Recording `recording` could not start on LiveKit: it is closed as failed with why.
    async fn not_started(&self, meeting: &MeetingId, recording: &RecordingId, reason: String);
}

#[async_trait]
impl RecordingReports for Meetings {
    async fn not_started(&self, meeting: &MeetingId, recording: &RecordingId, reason: String) {
        let outcome = RecordingOutcome::Failed {
            reason,
            files: Vec::new(),
            stop: StopReason::Failed,
        };
        if let Err(error) = self.finish_recording(meeting, recording, outcome).await {
            tracing::warn!(%meeting, %recording, %error, "cannot record that a recording did not start");
        }
    }
}

/// The media permissions a role carries on LiveKit: the core's [`MediaRights`] of the role, as its
/// token's grants are (LiveKit's permission has no room admin; that is a token grant only).
pub fn permission_for(role: Role) -> proto::ParticipantPermission {
    let rights = MediaRights::of(role);
    proto::ParticipantPermission {
        can_subscribe: rights.subscribe,
        can_publish: rights.publish,
        can_publish_data: rights.publish_data,
        hidden: false,
        ..proto::ParticipantPermission::default()
    }
}

/// The LiveKit server API call (RoomService or Egress) a command maps to.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    RemoveParticipant {
        room: String,
        identity: String,
    },
    UpdateParticipant {
        room: String,
        identity: String,
        permission: proto::ParticipantPermission,
    },
    /// MutePublishedTrack on one track sid.
    MuteTrack {
        room: String,
        identity: String,
        track_sid: String,
        muted: bool,
    },
    /// GetParticipant, then MutePublishedTrack on each of its tracks of this kind.
    MuteKind {
        room: String,
        identity: String,
        kind: proto::TrackType,
        muted: bool,
    },
    DeleteRoom {
        room: String,
    },
    /// CreateRoom (LiveKit starts no egress for a room it does not have, and a recording may
    /// start before anyone's media connects: a meeting that records itself does), then
    /// StartRoomCompositeEgress to `filepath`; after a failed try, ListEgress first (a start that
    /// timed out may have started it).
    StartEgress {
        room: String,
        meeting: MeetingId,
        recording: RecordingId,
        filepath: String,
    },
    /// ListEgress for the room, then StopEgress on each running egress of the recording.
    StopEgress {
        room: String,
        meeting: MeetingId,
        recording: RecordingId,
    },
}

/// Maps a core command to its LiveKit call.
pub fn call_for(command: &MediaCommand) -> Call {
    match command {
        MediaCommand::Disconnect { room, identity } => Call::RemoveParticipant {
            room: room.to_string(),
            identity: identity.to_string(),
        },
        MediaCommand::SetRole {
            room,
            identity,
            role,
        } => Call::UpdateParticipant {
            room: room.to_string(),
            identity: identity.to_string(),
            permission: permission_for(*role),
        },
        MediaCommand::Mute {
            room,
            identity,
            track,
            muted,
        } => {
            let (room, identity, muted) = (room.to_string(), identity.to_string(), *muted);
            match track {
                TrackSelector::Track(sid) => Call::MuteTrack {
                    room,
                    identity,
                    track_sid: sid.clone(),
                    muted,
                },
                TrackSelector::Audio => Call::MuteKind {
                    room,
                    identity,
                    kind: proto::TrackType::Audio,
                    muted,
                },
                TrackSelector::Video => Call::MuteKind {
                    room,
                    identity,
                    kind: proto::TrackType::Video,
                    muted,
                },
            }
        }
        MediaCommand::CloseRoom { room } => Call::DeleteRoom {
            room: room.to_string(),
        },
        MediaCommand::StartRecording {
            room,
            meeting,
            recording,
        } => Call::StartEgress {
            room: room.to_string(),
            meeting: meeting.clone(),
            recording: recording.clone(),
            filepath: egress::composite_filepath(meeting, recording),
        },
        MediaCommand::StopRecording {
            room,
            meeting,
            recording,
        } => Call::StopEgress {
            room: room.to_string(),
            meeting: meeting.clone(),
            recording: recording.clone(),
        },
    }
}

/// The sids of a participant's tracks of one kind.
pub fn tracks_of_kind(info: &proto::ParticipantInfo, kind: proto::TrackType) -> Vec<String> {
    info.tracks
        .iter()
        .filter(|t| t.r#type == kind as i32)
        .map(|t| t.sid.clone())
        .collect()
}

/// Makes one call once (`retry`: an earlier try failed). `NotFound` is success, except for
/// starting an egress: what LiveKit does not find is not recorded.
async fn attempt(
    api: &dyn RoomApi,
    egress_api: &dyn EgressApi,
    call: &Call,
    retry: bool,
) -> Result<(), CallFailure> {
    let result = match call {
        Call::RemoveParticipant { room, identity } => api.remove_participant(room, identity).await,
        Call::StartEgress {
            room,
            meeting,
            recording,
            filepath,
        } => {
            return start_egress(api, egress_api, room, meeting, recording, filepath, retry).await;
        }
        Call::StopEgress {
            room,
            meeting,
            recording,
        } => stop_egresses(egress_api, room, meeting, recording).await,
        Call::UpdateParticipant {
            room,
            identity,
            permission,
        } => {
            api.update_permission(room, identity, permission.clone())
                .await
        }
        Call::MuteTrack {
            room,
            identity,
            track_sid,
            muted,
        } => {
            api.mute_published_track(room, identity, track_sid, *muted)
                .await
        }
        Call::MuteKind {
            room,
            identity,
            kind,
            muted,
        } => match api.get_participant(room, identity).await {
            Ok(info) => {
                let mut outcome = Ok(());
                for sid in tracks_of_kind(&info, *kind) {
                    match api.mute_published_track(room, identity, &sid, *muted).await {
                        Ok(()) | Err(CallFailure::NotFound) => {}
                        Err(e) => outcome = Err(e),
                    }
                }
                outcome
            }
            Err(e) => Err(e),
        },
        Call::DeleteRoom { room } => api.delete_room(room).await,
    };
    match result {
        Ok(()) | Err(CallFailure::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn start_egress(
    api: &dyn RoomApi,
    egress_api: &dyn EgressApi,
    room: &str,
    meeting: &MeetingId,
    recording: &RecordingId,
    filepath: &str,
    retry: bool,
) -> Result<(), CallFailure> {
    if retry {
        let running = egress_api.list_active(room).await?;
        if let Some(info) = running
            .iter()
            .find(|info| egress::belongs_to(info, meeting, recording))
        {
            tracing::info!(%meeting, %recording, egress_id = info.egress_id, "LiveKit Egress started by an earlier try");
            return Ok(());
        }
    }
    let not_found = |what: &str| CallFailure::Permanent(format!("LiveKit found no {what}"));
    match api.create_room(room).await {
        Err(CallFailure::NotFound) => return Err(not_found("room service")),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    match egress_api.start_room_composite(room, filepath).await {
        Ok(info) => {
            tracing::info!(%meeting, %recording, egress_id = info.egress_id, filepath, "LiveKit Egress started");
            Ok(())
        }
        Err(CallFailure::NotFound) => Err(not_found(&format!("room {room:?} to record"))),
        Err(e) => Err(e),
    }
}

async fn stop_egresses(
    egress_api: &dyn EgressApi,
    room: &str,
    meeting: &MeetingId,
    recording: &RecordingId,
) -> Result<(), CallFailure> {
    let running: Vec<proto::EgressInfo> = egress_api
        .list_active(room)
        .await?
        .into_iter()
        .filter(|info| egress::is_running(info) && egress::belongs_to(info, meeting, recording))
        .collect();
    if running.is_empty() {
        tracing::info!(%meeting, %recording, "no LiveKit Egress of the recording is running");
    }
    let mut outcome = Ok(());
    for info in running {
        match egress_api.stop_egress(&info.egress_id).await {
            Ok(()) | Err(CallFailure::NotFound) => {
                tracing::info!(%meeting, %recording, egress_id = info.egress_id, "LiveKit Egress stopped");
            }
            Err(e) => outcome = Err(e),
        }
    }
    outcome
}

/// Carries out one command, retrying transient failures by `policy`; returns the last failure
/// when it gives up (the caller logs it).
pub async fn carry_out(
    api: &dyn RoomApi,
    egress_api: &dyn EgressApi,
    command: &MediaCommand,
    policy: RetryPolicy,
) -> Result<(), CallFailure> {
    let call = call_for(command);
    let mut backoff = policy.first_backoff;
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(api, egress_api, &call, tries > 1).await {
            Ok(()) => return Ok(()),
            Err(CallFailure::Transient(reason)) if tries < policy.attempts.max(1) => {
                tracing::debug!(?call, %reason, tries, "LiveKit call failed; trying again");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Where recordings that did not start are reported, set once the core service exists.
type Reports = Arc<OnceLock<Arc<dyn RecordingReports>>>;

/// The core's media commands, carried out on an external LiveKit server.
pub struct LiveKitMedia {
    lanes: Vec<mpsc::Sender<MediaCommand>>,
    reports: Reports,
}

impl LiveKitMedia {
    /// RoomService and Egress clients for `api_url` authenticated with the LiveKit key pair, and
    /// the lanes that use them. Needs a tokio runtime.
    pub fn start(api_url: &url::Url, api_key: &str, api_secret: &ApiSecret) -> Self {
        let room = RoomClient::with_api_key(api_url.as_str(), api_key, api_secret.expose())
            .with_failover(false)
            .with_request_timeout(REQUEST_TIMEOUT);
        let egress = EgressClient::with_api_key(api_url.as_str(), api_key, api_secret.expose())
            .with_failover(false)
            .with_request_timeout(EGRESS_REQUEST_TIMEOUT);
        Self::with_api(Arc::new(room), Arc::new(egress), RetryPolicy::default())
    }

    /// The lanes over any [`RoomApi`] and [`EgressApi`] (tests use fake ones).
    pub fn with_api(
        api: Arc<dyn RoomApi>,
        egress_api: Arc<dyn EgressApi>,
        policy: RetryPolicy,
    ) -> Self {
        let reports: Reports = Arc::new(OnceLock::new());
        let lanes = (0..LANES)
            .map(|_| {
                let (sender, mut receiver) = mpsc::channel::<MediaCommand>(LANE_QUEUE);
                let (api, egress_api, reports) = (api.clone(), egress_api.clone(), reports.clone());
                tokio::spawn(async move {
                    while let Some(command) = receiver.recv().await {
                        let done =
                            carry_out(api.as_ref(), egress_api.as_ref(), &command, policy).await;
                        if let Err(failure) = done {
                            tracing::warn!(
                                ?command,
                                ?failure,
                                "LiveKit did not carry out a media command"
                            );
                            report_not_started(&reports, &command, &failure).await;
                        }
                    }
                });
                sender
            })
            .collect();
        Self { lanes, reports }
    }

    /// Where recordings LiveKit would not start are reported (the core service); once.
    pub fn attach(&self, reports: Arc<dyn RecordingReports>) {
        let _ = self.reports.set(reports);
    }

    fn lane(&self, room: &str) -> &mpsc::Sender<MediaCommand> {
        let mut hasher = DefaultHasher::new();
        room.hash(&mut hasher);
        &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize]
    }
}

/// A recording whose egress did not start is failed in the core (which stops it).
async fn report_not_started(reports: &Reports, command: &MediaCommand, failure: &CallFailure) {
    let MediaCommand::StartRecording {
        meeting, recording, ..
    } = command
    else {
        return;
    };
    let why = match failure {
        CallFailure::NotFound => "not found".to_owned(),
        CallFailure::Permanent(why) | CallFailure::Transient(why) => why.clone(),
    };
    match reports.get() {
        Some(reports) => {
            let reason = format!("LiveKit Egress did not start: {why}");
            reports.not_started(meeting, recording, reason).await;
        }
        None => {
            tracing::error!(%meeting, %recording, "a recording did not start and nobody hears of it")
        }
    }
}

fn room_of(command: &MediaCommand) -> &str {
    match command {
        MediaCommand::Disconnect { room, .. }
        | MediaCommand::SetRole { room, .. }
        | MediaCommand::Mute { room, .. }
        | MediaCommand::CloseRoom { room }
        | MediaCommand::StartRecording { room, .. }
        | MediaCommand::StopRecording { room, .. } => room.as_str(),
    }
}

#[async_trait]
impl MediaEngine for LiveKitMedia {
    async fn apply(&self, commands: &[MediaCommand]) {
        for command in commands {
            if let Err(e) = self.lane(room_of(command)).try_send(command.clone()) {
                tracing::error!(?command, error = %e, "LiveKit command queue full or closed: a media command was dropped");
            }
        }
    }

    /// Through LiveKit Egress (the deployment needs its egress service and storage).
    fn records(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use convene_core::ids::{Identity, RoomName};
    use livekit_api::services::ServerErrorCode;

    use super::*;

    #[test]
    fn update_participant_carries_the_cores_media_rights_for_every_role() {
        for role in [Role::Host, Role::Speaker, Role::Viewer] {
            let permission = permission_for(role);
            let rights = MediaRights::of(role);
            assert_eq!(
                (
                    permission.can_publish,
                    permission.can_subscribe,
                    permission.can_publish_data,
                    permission.hidden
                ),
                (rights.publish, rights.subscribe, rights.publish_data, false),
                "{role:?}"
            );
        }
    }

    fn room() -> RoomName {
        RoomName::parse("standup").unwrap()
    }

    fn alice() -> Identity {
        Identity::parse("alice").unwrap()
    }

    #[test]
    fn commands_map_to_room_service_calls() {
        assert_eq!(
            call_for(&MediaCommand::Disconnect {
                room: room(),
                identity: alice()
            }),
            Call::RemoveParticipant {
                room: "standup".into(),
                identity: "alice".into()
            }
        );
        let Call::UpdateParticipant { permission, .. } = call_for(&MediaCommand::SetRole {
            room: room(),
            identity: alice(),
            role: Role::Speaker,
        }) else {
            panic!("SetRole is UpdateParticipant")
        };
        assert!(
            permission.can_publish
                && permission.can_subscribe
                && permission.can_publish_data
                && !permission.hidden
        );
        let Call::UpdateParticipant { permission, .. } = call_for(&MediaCommand::SetRole {
            room: room(),
            identity: alice(),
            role: Role::Viewer,
        }) else {
            panic!("SetRole is UpdateParticipant")
        };
        assert!(
            !permission.can_publish && permission.can_subscribe && !permission.can_publish_data
        );
        assert_eq!(
            call_for(&MediaCommand::Mute {
                room: room(),
                identity: alice(),
                track: TrackSelector::Audio,
                muted: true
            }),
            Call::MuteKind {
                room: "standup".into(),
                identity: "alice".into(),
                kind: proto::TrackType::Audio,
                muted: true
            }
        );
        assert_eq!(
            call_for(&MediaCommand::Mute {
                room: room(),
                identity: alice(),
                track: TrackSelector::Track("TR_1".into()),
                muted: false
            }),
            Call::MuteTrack {
                room: "standup".into(),
                identity: "alice".into(),
                track_sid: "TR_1".into(),
                muted: false
            }
        );
        assert_eq!(
            call_for(&MediaCommand::CloseRoom { room: room() }),
            Call::DeleteRoom {
                room: "standup".into()
            }
        );
    }

    fn twirp(code: &str) -> ServiceError {
        ServiceError::Twirp(ServerError::Twirp(ServerErrorCode {
            code: code.into(),
            msg: "m".into(),
            meta: Default::default(),
        }))
    }

    #[test]
    fn errors_are_sorted_by_whether_a_retry_helps() {
        assert_eq!(classify(&twirp("not_found")), CallFailure::NotFound);
        assert!(matches!(
            classify(&twirp("unauthenticated")),
            CallFailure::Permanent(_)
        ));
        assert!(matches!(
            classify(&twirp("invalid_argument")),
            CallFailure::Permanent(_)
        ));
        assert!(matches!(
            classify(&twirp("internal")),
            CallFailure::Transient(_)
        ));
        assert!(matches!(
            classify(&twirp("unavailable")),
            CallFailure::Transient(_)
        ));
    }

    /// A RoomService and Egress that record calls and fail the first `failures` of them; the
    /// egresses it started are kept as LiveKit would list them.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        failures: Mutex<Vec<CallFailure>>,
        called: tokio::sync::Notify,
        egresses: Mutex<Vec<proto::EgressInfo>>,
        /// How StartRoomCompositeEgress fails, if it does.
        refuse_start: Option<CallFailure>,
    }

    impl Fake {
        fn failing(failures: Vec<CallFailure>) -> Self {
            Self {
                failures: Mutex::new(failures),
                ..Self::default()
            }
        }
        fn record(&self, call: String) -> Result<(), CallFailure> {
            self.calls.lock().unwrap().push(call);
            self.called.notify_one();
            let mut failures = self.failures.lock().unwrap();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.remove(0))
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl RoomApi for Fake {
        async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), CallFailure> {
            self.record(format!("remove {room} {identity}"))
        }
        async fn update_permission(
            &self,
            room: &str,
            identity: &str,
            permission: proto::ParticipantPermission,
        ) -> Result<(), CallFailure> {
            self.record(format!(
                "update {room} {identity} publish={}",
                permission.can_publish
            ))
        }
        async fn get_participant(
            &self,
            room: &str,
            identity: &str,
        ) -> Result<proto::ParticipantInfo, CallFailure> {
            self.record(format!("get {room} {identity}"))?;
            let track = |sid: &str, kind: proto::TrackType| proto::TrackInfo {
                sid: sid.into(),
                r#type: kind as i32,
                ..Default::default()
            };
            Ok(proto::ParticipantInfo {
                identity: identity.into(),
                tracks: vec![
                    track("TR_a1", proto::TrackType::Audio),
                    track("TR_v1", proto::TrackType::Video),
                    track("TR_a2", proto::TrackType::Audio),
                ],
                ..Default::default()
            })
        }
        async fn mute_published_track(
            &self,
            room: &str,
            identity: &str,
            track_sid: &str,
            muted: bool,
        ) -> Result<(), CallFailure> {
            self.record(format!("mute {room} {identity} {track_sid} {muted}"))
        }
        async fn delete_room(&self, room: &str) -> Result<(), CallFailure> {
            self.record(format!("delete {room}"))
        }
        async fn create_room(&self, room: &str) -> Result<(), CallFailure> {
            self.record(format!("create {room}"))
        }
    }

    #[async_trait]
    impl EgressApi for Fake {
        async fn start_room_composite(
            &self,
            room: &str,
            filepath: &str,
        ) -> Result<proto::EgressInfo, CallFailure> {
            self.record(format!("start egress {room} {filepath}"))?;
            if let Some(refusal) = &self.refuse_start {
                return Err(refusal.clone());
            }
            let mut egresses = self.egresses.lock().unwrap();
            let info = proto::EgressInfo {
                egress_id: format!("EG_{}", egresses.len() + 1),
                room_name: room.into(),
                status: proto::EgressStatus::EgressStarting as i32,
                request: Some(proto::egress_info::Request::RoomComposite(
                    proto::RoomCompositeEgressRequest {
                        room_name: room.into(),
                        file_outputs: vec![proto::EncodedFileOutput {
                            filepath: filepath.into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            egresses.push(info.clone());
            Ok(info)
        }
        async fn list_active(&self, room: &str) -> Result<Vec<proto::EgressInfo>, CallFailure> {
            self.record(format!("list egress {room}"))?;
            Ok(self
                .egresses
                .lock()
                .unwrap()
                .iter()
                .filter(|e| {
                    e.room_name == room && e.status < proto::EgressStatus::EgressComplete as i32
                })
                .cloned()
                .collect())
        }
        async fn stop_egress(&self, egress_id: &str) -> Result<(), CallFailure> {
            self.record(format!("stop egress {egress_id}"))?;
            for info in self.egresses.lock().unwrap().iter_mut() {
                if info.egress_id == egress_id {
                    info.status = proto::EgressStatus::EgressEnding as i32;
                }
            }
            Ok(())
        }
    }

    /// Records what recordings were reported as not started.
    #[derive(Default)]
    struct Reports {
        failed: Mutex<Vec<(String, String)>>,
        reported: tokio::sync::Notify,
    }

    #[async_trait]
    impl RecordingReports for Reports {
        async fn not_started(&self, _meeting: &MeetingId, recording: &RecordingId, reason: String) {
            self.failed
                .lock()
                .unwrap()
                .push((recording.to_string(), reason));
            self.reported.notify_one();
        }
    }

    fn meeting_id() -> MeetingId {
        MeetingId::parse("1234567890").unwrap()
    }

    fn recording_id(n: u8) -> RecordingId {
        RecordingId::parse(&format!("rec_{n:024x}")).unwrap()
    }

    fn start(n: u8) -> MediaCommand {
        MediaCommand::StartRecording {
            room: room(),
            meeting: meeting_id(),
            recording: recording_id(n),
        }
    }

    fn stop(n: u8) -> MediaCommand {
        MediaCommand::StopRecording {
            room: room(),
            meeting: meeting_id(),
            recording: recording_id(n),
        }
    }

    #[test]
    fn recording_commands_map_to_egress_calls_named_after_the_recording() {
        assert_eq!(
            call_for(&start(1)),
            Call::StartEgress {
                room: "standup".into(),
                meeting: meeting_id(),
                recording: recording_id(1),
                filepath: "convene/1234567890/rec_000000000000000000000001/composite.mp4".into(),
            }
        );
        assert_eq!(
            call_for(&stop(1)),
            Call::StopEgress {
                room: "standup".into(),
                meeting: meeting_id(),
                recording: recording_id(1),
            }
        );
    }

    #[tokio::test]
    async fn stopping_a_recording_stops_its_running_egresses_only() {
        let fake = Fake::default();
        carry_out(&fake, &fake, &start(1), FAST).await.unwrap();
        carry_out(&fake, &fake, &start(2), FAST).await.unwrap();
        carry_out(&fake, &fake, &stop(1), FAST).await.unwrap();
        assert_eq!(
            fake.calls(),
            [
                "create standup",
                "start egress standup convene/1234567890/rec_000000000000000000000001/composite.mp4",
                "create standup",
                "start egress standup convene/1234567890/rec_000000000000000000000002/composite.mp4",
                "list egress standup",
                "stop egress EG_1",
            ]
        );
        // Stopped already (ending): nothing more to stop, and that is not a failure.
        carry_out(&fake, &fake, &stop(1), FAST).await.unwrap();
        assert_eq!(fake.calls().last().unwrap(), "list egress standup");
        // The room is gone on LiveKit: its egresses ended with it.
        let gone = Fake::failing(vec![CallFailure::NotFound]);
        assert_eq!(carry_out(&gone, &gone, &stop(1), FAST).await, Ok(()));
    }

    #[tokio::test]
    async fn a_start_retried_after_a_timeout_does_not_start_a_second_egress() {
        // The first start reached LiveKit but its answer was lost; the retry finds it running.
        struct LostAnswer(Fake);
        #[async_trait]
        impl EgressApi for LostAnswer {
            async fn start_room_composite(
                &self,
                room: &str,
                filepath: &str,
            ) -> Result<proto::EgressInfo, CallFailure> {
                self.0.start_room_composite(room, filepath).await?;
                Err(CallFailure::Transient("timed out".into()))
            }
            async fn list_active(&self, room: &str) -> Result<Vec<proto::EgressInfo>, CallFailure> {
                self.0.list_active(room).await
            }
            async fn stop_egress(&self, egress_id: &str) -> Result<(), CallFailure> {
                self.0.stop_egress(egress_id).await
            }
        }
        let lost = LostAnswer(Fake::default());
        assert_eq!(carry_out(&lost.0, &lost, &start(1), FAST).await, Ok(()));
        assert_eq!(
            lost.0.calls(),
            [
                "create standup",
                "start egress standup convene/1234567890/rec_000000000000000000000001/composite.mp4",
                "list egress standup",
            ]
        );
        assert_eq!(lost.0.egresses.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_recording_livekit_will_not_start_is_reported_failed() {
        // The room was created, but LiveKit finds no room to record (it closed meanwhile).
        let fake = Arc::new(Fake {
            refuse_start: Some(CallFailure::NotFound),
            ..Fake::default()
        });
        let media = LiveKitMedia::with_api(fake.clone(), fake.clone(), FAST);
        assert!(media.records());
        let reports = Arc::new(Reports::default());
        media.attach(reports.clone());
        media.apply(&[start(1)]).await;
        tokio::time::timeout(Duration::from_secs(5), reports.reported.notified())
            .await
            .expect("reported");
        assert_eq!(
            reports.failed.lock().unwrap().clone(),
            [(
                "rec_000000000000000000000001".to_owned(),
                "LiveKit Egress did not start: LiveKit found no room \"standup\" to record"
                    .to_owned()
            )]
        );
        // A permanent refusal (no egress service, bad credentials) is not retried either.
        let fake = Arc::new(Fake::failing(vec![CallFailure::Permanent(
            "unauthenticated".into(),
        )]));
        assert_eq!(
            carry_out(fake.as_ref(), fake.as_ref(), &start(1), FAST).await,
            Err(CallFailure::Permanent("unauthenticated".into()))
        );
        assert_eq!(fake.calls().len(), 1);
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(1),
    };

    #[tokio::test]
    async fn muting_a_kind_mutes_each_track_of_that_kind() {
        let fake = Fake::default();
        let command = MediaCommand::Mute {
            room: room(),
            identity: alice(),
            track: TrackSelector::Audio,
            muted: true,
        };
        carry_out(&fake, &fake, &command, FAST).await.unwrap();
        assert_eq!(
            fake.calls(),
            [
                "get standup alice",
                "mute standup alice TR_a1 true",
                "mute standup alice TR_a2 true"
            ]
        );
    }

    #[tokio::test]
    async fn not_found_is_done_transient_failures_are_retried_a_bounded_number_of_times() {
        let command = MediaCommand::Disconnect {
            room: room(),
            identity: alice(),
        };
        let fake = Fake::failing(vec![CallFailure::NotFound]);
        assert_eq!(carry_out(&fake, &fake, &command, FAST).await, Ok(()));
        assert_eq!(fake.calls().len(), 1);

        let fake = Fake::failing(vec![
            CallFailure::Transient("down".into()),
            CallFailure::Transient("down".into()),
        ]);
        assert_eq!(carry_out(&fake, &fake, &command, FAST).await, Ok(()));
        assert_eq!(fake.calls().len(), 3);

        let fake = Fake::failing(vec![CallFailure::Transient("down".into()); 5]);
        assert_eq!(
            carry_out(&fake, &fake, &command, FAST).await,
            Err(CallFailure::Transient("down".into()))
        );
        assert_eq!(
            fake.calls().len(),
            3,
            "gives up after the policy's attempts"
        );

        let fake = Fake::failing(vec![CallFailure::Permanent("unauthenticated".into())]);
        assert!(matches!(
            carry_out(&fake, &fake, &command, FAST).await,
            Err(CallFailure::Permanent(_))
        ));
        assert_eq!(fake.calls().len(), 1, "a permanent failure is not retried");
    }

    #[tokio::test]
    async fn a_rooms_commands_keep_their_order_and_apply_does_not_wait() {
        let fake = Arc::new(Fake::default());
        let media = LiveKitMedia::with_api(fake.clone(), fake.clone(), FAST);
        let commands = vec![
            MediaCommand::SetRole {
                room: room(),
                identity: alice(),
                role: Role::Speaker,
            },
            MediaCommand::SetRole {
                room: room(),
                identity: alice(),
                role: Role::Viewer,
            },
            MediaCommand::Disconnect {
                room: room(),
                identity: alice(),
            },
            MediaCommand::CloseRoom { room: room() },
        ];
        media.apply(&commands).await;
        while fake.calls().len() < 4 {
            tokio::time::timeout(Duration::from_secs(5), fake.called.notified())
                .await
                .expect("the lane carries the commands out");
        }
        assert_eq!(
            fake.calls(),
            [
                "update standup alice publish=true",
                "update standup alice publish=false",
                "remove standup alice",
                "delete standup"
            ]
        );
    }
}
