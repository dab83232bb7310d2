//! Seed 001: the interactive live-stream API (Twilio Live), at `/compat/live-stream`.
//!
//! Every route answers `POST` and needs `Authorization: <passcode>` (compared in constant time;
//! failures counted per client address in the store through [`Meetings::check_guess`]). A stream
//! is a `stream`-mode meeting with policy `open`, whose room name is the stream name; passcode
//! holders are the app's trusted users, so the surface places them with the role the call names
//! and moderates as an admin, as the original backend did.
//!
//! The Sync objects of the original are views computed from the core ([`state`]): `speakers`,
//! `viewers`, `raised_hands` and `user-<identity>` (the speaker invitation), served by
//! `/stream-state` and changed by events on convene's event channel (see the docs page
//! `docs/compat/seed-001-live-stream.md`).
//!
//! [`Meetings::check_guess`]: convene_core::service::Meetings::check_guess

pub mod error;
pub mod state;
pub mod wire;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use convene_api::AppState;
use convene_core::ids::{DisplayName, Identity, RoomName};
use convene_core::meeting::{
    Meeting, MeetingSettings, Metadata, Mode, QualityPreset, WaitingPolicy,
};
use convene_core::participant::{Participant, Role};
use convene_core::service::{Caller, NewMeeting};
use convene_core::{ErrorCode, ValidationError};

use crate::created_by;
use crate::params::Params;
use crate::secret::HeaderSecret;
use error::{LiveStreamError, Result};
use wire::{Deleted, DocumentNames, Removed, Sent, StreamState, StreamToken, Success, Verified};

/// The metadata mark of meetings this surface created; it serves no other meetings.
const SURFACE: &str = "live-stream";
/// The failure counter of the passcode (the core also counts per client address).
const PASSCODE_KEY: &str = "compat:live-stream:passcode";

/// The surface's state: the app's, and the passcode's digest.
#[derive(Clone)]
pub struct LiveState {
    pub app: AppState,
    passcode: HeaderSecret,
}

/// The surface's routes; every route answers `POST` and checks the passcode first.
pub fn router(state: AppState, passcode: String) -> Router {
    let state = LiveState {
        app: state,
        passcode: HeaderSecret::new(PASSCODE_KEY, &passcode),
    };
    Router::new()
        .route("/verify-passcode", post(verify_passcode))
        .route("/create-stream", post(create_stream))
        .route("/join-stream-as-speaker", post(join_as_speaker))
        .route("/join-stream-as-viewer", post(join_as_viewer))
        .route("/viewer-connected-to-player", post(viewer_connected))
        .route("/raise-hand", post(raise_hand))
        .route("/send-speaker-invite", post(send_speaker_invite))
        .route("/remove-speaker", post(remove_speaker))
        .route("/delete-stream", post(delete_stream))
        .route("/stream-state", post(stream_state))
        .fallback(|| async {
            LiveStreamError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not found",
                "No such endpoint.",
            )
        })
        .method_not_allowed_fallback(|| async {
            LiveStreamError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                "Use POST for every request.",
            )
        })
        .with_state(state)
}

/// Proof that the request carried the passcode.
pub struct Passcode;

impl FromRequestParts<LiveState> for Passcode {
    type Rejection = LiveStreamError;

    async fn from_request_parts(parts: &mut Parts, state: &LiveState) -> Result<Self> {
        match state.passcode.check(&state.app, parts).await {
            Ok(true) => Ok(Self),
            Ok(false) => Err(LiveStreamError::passcode()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The request's parameters (JSON or form), failures in this surface's shape.
type Form = crate::params::Form<LiveStreamError>;

fn settings(name: &RoomName) -> Result<MeetingSettings> {
    Ok(MeetingSettings {
        name: DisplayName::parse(name.as_str())?,
        mode: Mode::Stream,
        policy: WaitingPolicy::Open,
        capacity: None,
        quality: QualityPreset::Default,
        logout_url: None,
        metadata: Metadata::parse(serde_json::json!({ "compat": SURFACE }))?,
        schedule: None,
        webhook_url: None,
        waiting_room_chat: false,
        auto_record: false,
    })
}

fn identity_param(params: &Params) -> Result<Identity> {
    Identity::parse(&params.required("user_identity")?).map_err(|e| renamed(e, "user_identity"))
}

/// A validation error named after the parameter the client sent.
fn renamed(error: ValidationError, parameter: &str) -> LiveStreamError {
    ValidationError::new(parameter, error.reason).into()
}

/// The stream of this name, live, or 404.
async fn live_stream(state: &AppState, parameter: &str, name: &str) -> Result<Meeting> {
    let room = RoomName::parse(name).map_err(|e| renamed(e, parameter))?;
    match state.meetings.meeting_by_room(&room).await? {
        Some(meeting) if created_by(&meeting, SURFACE) && meeting.is_live() => Ok(meeting),
        Some(meeting) if created_by(&meeting, SURFACE) => Err(LiveStreamError::stream_not_found(
            format!("The stream '{name}' has ended."),
        )),
        _ => Err(LiveStreamError::stream_not_found(format!(
            "No stream named '{name}' exists."
        ))),
    }
}

/// A participant of the stream's current run, or 404.
async fn member(state: &AppState, meeting: &Meeting, identity: &Identity) -> Result<Participant> {
    let participant = match state.meetings.participant(&meeting.id, identity).await {
        Ok(p) => p,
        Err(e) if e.code() == ErrorCode::ParticipantNotFound => {
            return Err(LiveStreamError::user_not_found(identity.as_str()));
        }
        Err(e) => return Err(e.into()),
    };
    if !state::in_run(meeting, &participant) {
        return Err(LiveStreamError::user_not_found(identity.as_str()));
    }
    Ok(participant)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Host => "host",
        Role::Speaker => "speaker",
        Role::Viewer => "viewer",
    }
}

async fn token_response(
    state: &AppState,
    meeting: &Meeting,
    participant: &Participant,
) -> Result<Json<StreamToken>> {
    let tokens = state.join_tokens(meeting, participant)?;
    Ok(Json(StreamToken {
        token: tokens.media,
        api_token: tokens.api,
        identity: participant.identity.to_string(),
        stream_name: meeting.room_name.to_string(),
        room_sid: state::room_sid(meeting),
        role: role_name(participant.role),
        url: state.media_url(meeting).await?,
        meeting_id: meeting.id.to_string(),
        events_url: state.urls.events(meeting.id.as_str()),
        chat_url: format!("{}/v1/meetings/{}/chat", state.urls.http, meeting.id),
        documents: DocumentNames {
            speakers: state::SPEAKERS,
            viewers: state::VIEWERS,
            raised_hands: state::RAISED_HANDS,
            user: state::user_document(&participant.identity),
        },
    }))
}

/// Joins a participant (media presence), as the person themself.
async fn join(
    state: &AppState,
    meeting: &Meeting,
    participant: &Participant,
) -> Result<(Meeting, Participant)> {
    let caller = Caller::Participant {
        identity: participant.identity.clone(),
        instance: meeting.run.instance_id.clone(),
        epoch: participant.epoch,
    };
    Ok(state.meetings.join(&meeting.id, &caller).await?)
}

/// `/verify-passcode` -> `{"verified": true}`.
async fn verify_passcode(_passcode: Passcode) -> Json<Verified> {
    Json(Verified { verified: true })
}

/// `/create-stream` (`user_identity`, `stream_name`): a stream whose host is the caller.
async fn create_stream(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<StreamToken>> {
    let state = state.app;
    let identity = identity_param(&params)?;
    let name = params.required("stream_name")?;
    let room = RoomName::parse(&name).map_err(|e| renamed(e, "stream_name"))?;
    let exists = || {
        LiveStreamError::new(
            axum::http::StatusCode::CONFLICT,
            "error creating room",
            "Room already exists.",
        )
    };
    let meeting = match state.meetings.meeting_by_room(&room).await? {
        // An ended stream of this surface starts again (a new run) with the new host.
        Some(meeting) if created_by(&meeting, SURFACE) && !meeting.is_live() => meeting,
        Some(_) => return Err(exists()),
        None => {
            let request = NewMeeting {
                id: None,
                digits: None,
                room_name: Some(room.clone()),
                settings: settings(&room)?,
                host_credential: None,
                participant_credential: None,
                viewer_credential: None,
            };
            state
                .meetings
                .create_meeting(request)
                .await
                .map_err(|e| match e.code() {
                    ErrorCode::AlreadyExists => exists(),
                    _ => e.into(),
                })?
        }
    };
    let name = DisplayName::parse(identity.as_str())?;
    let (meeting, host) = state
        .meetings
        .enter_trusted(&meeting.id, identity, name, Role::Host)
        .await?;
    let (meeting, host) = join(&state, &meeting, &host).await?;
    token_response(&state, &meeting, &host).await
}

/// Places a user on the stream with `role`, or moves them there (speaker <-> viewer). A host who
/// joins as a speaker stays the host.
async fn join_as(state: &AppState, params: &Params, role: Role) -> Result<Json<StreamToken>> {
    let identity = identity_param(params)?;
    let meeting = live_stream(state, "stream_name", &params.required("stream_name")?).await?;
    let existing = match state.meetings.participant(&meeting.id, &identity).await {
        Ok(p) => Some(p),
        Err(e) if e.code() == ErrorCode::ParticipantNotFound => None,
        Err(e) => return Err(e.into()),
    };
    let role = match &existing {
        Some(p) if p.role == Role::Host && role == Role::Speaker => Role::Host,
        _ => role,
    };
    let participant = match existing {
        Some(p) if state::in_run(&meeting, &p) && p.role == role => p,
        Some(p) if state::in_run(&meeting, &p) => {
            state
                .meetings
                .set_role(&meeting.id, &Caller::Admin, &p.identity, role)
                .await?
        }
        _ => {
            let name = DisplayName::parse(identity.as_str())?;
            state
                .meetings
                .enter_trusted(&meeting.id, identity, name, role)
                .await?
                .1
        }
    };
    let meeting = state.meetings.meeting(&meeting.id).await?;
    let (meeting, participant) = if role.can_publish() {
        join(state, &meeting, &participant).await?
    } else {
        (meeting, participant)
    };
    token_response(state, &meeting, &participant).await
}

/// `/join-stream-as-speaker` (`user_identity`, `stream_name`) -> a token that may publish.
async fn join_as_speaker(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<StreamToken>> {
    join_as(&state.app, &params, Role::Speaker).await
}

/// `/join-stream-as-viewer` (`user_identity`, `stream_name`) -> a token that only subscribes.
async fn join_as_viewer(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<StreamToken>> {
    join_as(&state.app, &params, Role::Viewer).await
}

/// `/viewer-connected-to-player` (`user_identity`, `stream_name`): the viewer shows as connected.
async fn viewer_connected(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<Success>> {
    let state = state.app;
    let identity = identity_param(&params)?;
    let meeting = live_stream(&state, "stream_name", &params.required("stream_name")?).await?;
    let viewer = member(&state, &meeting, &identity).await?;
    join(&state, &meeting, &viewer).await?;
    Ok(Json(Success { success: true }))
}

/// `/raise-hand` (`user_identity`, `stream_name`, `hand_raised`).
async fn raise_hand(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<Sent>> {
    let state = state.app;
    let identity = identity_param(&params)?;
    let name = params.required("stream_name")?;
    let raised = params
        .boolean("hand_raised")?
        .ok_or_else(|| LiveStreamError::missing("hand_raised"))?;
    let meeting = live_stream(&state, "stream_name", &name).await?;
    member(&state, &meeting, &identity).await?;
    state
        .meetings
        .set_hand(&meeting.id, &Caller::Admin, Some(&identity), raised)
        .await?;
    Ok(Json(Sent { sent: true }))
}

/// `/send-speaker-invite` (`user_identity`, `room_sid`): the viewer's own document shows the invitation.
async fn send_speaker_invite(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<Sent>> {
    let state = state.app;
    let identity = identity_param(&params)?;
    let sid = params.required("room_sid")?;
    let meeting = state::resolve_room_sid(&state, &sid).await?;
    member(&state, &meeting, &identity).await?;
    state
        .meetings
        .invite(&meeting.id, &Caller::Admin, &identity)
        .await?;
    Ok(Json(Sent { sent: true }))
}

/// `/remove-speaker` (`user_identity`, `room_name`): removes the user from the video room (they
/// leave the stage and the media room; their tokens stop working; they may come back as a viewer).
async fn remove_speaker(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<Removed>> {
    let state = state.app;
    let identity = identity_param(&params)?;
    let meeting = live_stream(&state, "room_name", &params.required("room_name")?).await?;
    let target = member(&state, &meeting, &identity).await?;
    if target.role == Role::Host {
        return Err(LiveStreamError::new(
            axum::http::StatusCode::FORBIDDEN,
            "error removing speaker",
            "The host cannot be removed; delete the stream instead.",
        ));
    }
    state
        .meetings
        .remove(&meeting.id, &Caller::Admin, &identity)
        .await?;
    Ok(Json(Removed { removed: true }))
}

/// `/delete-stream` (`stream_name`): ends the stream; everyone is disconnected.
async fn delete_stream(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<Deleted>> {
    let state = state.app;
    let meeting = live_stream(&state, "stream_name", &params.required("stream_name")?).await?;
    state
        .meetings
        .end_meeting(&meeting.id, &Caller::Admin)
        .await?;
    Ok(Json(Deleted { deleted: true }))
}

/// `/stream-state` (`stream_name`, optional `user_identity`): every state document now.
async fn stream_state(
    State(state): State<LiveState>,
    _passcode: Passcode,
    Form { params, .. }: Form,
) -> Result<Json<StreamState>> {
    let state = state.app;
    let meeting = live_stream(&state, "stream_name", &params.required("stream_name")?).await?;
    let user = params
        .text("user_identity")?
        .map(|u| Identity::parse(&u))
        .transpose()?;
    Ok(Json(
        state::documents(&state, &meeting, user.as_ref()).await?,
    ))
}
