//! The core's [`MediaEngine`] port carried out on an external LiveKit deployment through its
//! server API (RoomService, with the official `livekit-api` client). LiveKit cannot ask convene
//! before a join, so admission there rests on the media token (short-lived, minted only for an
//! admitted person of a live meeting, see `MediaTokens::LiveKit`) plus the join check in
//! `livekit_webhook`; removal, bans, role changes, mutes and the end of a meeting act here.
//!
//! `apply` never waits on the network: commands go into bounded per-lane queues (a room always
//! maps to the same lane, so its commands keep their order) and each lane's task carries them out,
//! retrying transient failures a bounded number of times with backoff. "Not found" counts as done:
//! a person who is not connected has nothing to disconnect, and the stored state still applies.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use convene_core::access::MediaRights;
use convene_core::apikey::ApiSecret;
use convene_core::event::TrackSelector;
use convene_core::ops::MediaCommand;
use convene_core::participant::Role;
use convene_core::ports::MediaEngine;
use livekit_api::services::room::{RoomClient, UpdateParticipantOptions};
use livekit_api::services::{ServerError, ServiceError};
use livekit_protocol as proto;
use tokio::sync::mpsc;

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

/// The first RoomService call a command maps to.
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
    /// A command with no RoomService call.
    Nothing {
        room: String,
    },
}

/// Maps a core command to its RoomService call.
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
        // Filtered out before any lane (`LiveKitMedia::apply`): nothing to call.
        MediaCommand::StartRecording { room, .. } | MediaCommand::StopRecording { room, .. } => {
            Call::Nothing {
                room: room.to_string(),
            }
        }
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

/// Makes one call once. `NotFound` is success.
async fn attempt(api: &dyn RoomApi, call: &Call) -> Result<(), CallFailure> {
    let result = match call {
        Call::RemoveParticipant { room, identity } => api.remove_participant(room, identity).await,
        Call::Nothing { .. } => Ok(()),
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

/// Carries out one command, retrying transient failures by `policy`; returns the last failure
/// when it gives up (the caller logs it).
pub async fn carry_out(
    api: &dyn RoomApi,
    command: &MediaCommand,
    policy: RetryPolicy,
) -> Result<(), CallFailure> {
    let call = call_for(command);
    let mut backoff = policy.first_backoff;
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt(api, &call).await {
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

/// The core's media commands, carried out on an external LiveKit server.
pub struct LiveKitMedia {
    lanes: Vec<mpsc::Sender<MediaCommand>>,
}

impl LiveKitMedia {
    /// A RoomService client for `api_url` authenticated with the LiveKit key pair, and the lanes
    /// that use it. Needs a tokio runtime.
    pub fn start(api_url: &url::Url, api_key: &str, api_secret: &ApiSecret) -> Self {
        let client = RoomClient::with_api_key(api_url.as_str(), api_key, api_secret.expose())
            .with_failover(false)
            .with_request_timeout(REQUEST_TIMEOUT);
        Self::with_api(Arc::new(client), RetryPolicy::default())
    }

    /// The lanes over any [`RoomApi`] (tests use a fake one).
    pub fn with_api(api: Arc<dyn RoomApi>, policy: RetryPolicy) -> Self {
        let lanes = (0..LANES)
            .map(|_| {
                let (sender, mut receiver) = mpsc::channel::<MediaCommand>(LANE_QUEUE);
                let api = api.clone();
                tokio::spawn(async move {
                    while let Some(command) = receiver.recv().await {
                        if let Err(failure) = carry_out(api.as_ref(), &command, policy).await {
                            tracing::warn!(
                                ?command,
                                ?failure,
                                "LiveKit did not carry out a media command"
                            );
                        }
                    }
                });
                sender
            })
            .collect();
        Self { lanes }
    }

    fn lane(&self, room: &str) -> &mpsc::Sender<MediaCommand> {
        let mut hasher = DefaultHasher::new();
        room.hash(&mut hasher);
        &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize]
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
            if matches!(
                command,
                MediaCommand::StartRecording { .. } | MediaCommand::StopRecording { .. }
            ) {
                // Never asked for: `records` says no (LiveKit Egress is not driven yet).
                tracing::warn!(
                    ?command,
                    "recording is not available with an external LiveKit"
                );
                continue;
            }
            if let Err(e) = self.lane(room_of(command)).try_send(command.clone()) {
                tracing::error!(?command, error = %e, "LiveKit command queue full or closed: a media command was dropped");
            }
        }
    }

    fn records(&self) -> bool {
        false
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

    /// A RoomService that records calls and fails the first `failures` of them.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        failures: Mutex<Vec<CallFailure>>,
        called: tokio::sync::Notify,
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
        carry_out(&fake, &command, FAST).await.unwrap();
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
        assert_eq!(carry_out(&fake, &command, FAST).await, Ok(()));
        assert_eq!(fake.calls().len(), 1);

        let fake = Fake::failing(vec![
            CallFailure::Transient("down".into()),
            CallFailure::Transient("down".into()),
        ]);
        assert_eq!(carry_out(&fake, &command, FAST).await, Ok(()));
        assert_eq!(fake.calls().len(), 3);

        let fake = Fake::failing(vec![CallFailure::Transient("down".into()); 5]);
        assert_eq!(
            carry_out(&fake, &command, FAST).await,
            Err(CallFailure::Transient("down".into()))
        );
        assert_eq!(
            fake.calls().len(),
            3,
            "gives up after the policy's attempts"
        );

        let fake = Fake::failing(vec![CallFailure::Permanent("unauthenticated".into())]);
        assert!(matches!(
            carry_out(&fake, &command, FAST).await,
            Err(CallFailure::Permanent(_))
        ));
        assert_eq!(fake.calls().len(), 1, "a permanent failure is not retried");
    }

    #[tokio::test]
    async fn a_rooms_commands_keep_their_order_and_apply_does_not_wait() {
        let fake = Arc::new(Fake::default());
        let media = LiveKitMedia::with_api(fake.clone(), FAST);
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
