//! Seed 002: the LiveKit room-join function (an Appwrite function with the "Users" permission),
//! at `POST /compat/livekit-join/` (with or without the trailing slash).
//!
//! `roomName` and `uid` come as JSON or as a form ([`crate::params`]). The caller is a signed-in
//! user (`Authorization: Bearer <session token>` from seed 004's email login, standing in for
//! Appwrite's user session) asking for its own `uid`, or an admin (the API key as Basic
//! credentials or an admin JWT) asking for any `uid`. The room is created on first join, as
//! LiveKit does (a convene meeting with policy `open`, whose room name is `roomName`), and an
//! ended one opens again. The person enters under `uid` as identity, keeping the role they have
//! in the room (a host stays host) or as a speaker; bans hold.
//!
//! Tokens are signed with convene's key and point at convene's own signalling URL, unless
//! `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET` (and `LIVEKIT_SOCKET_URL`) are set, as in the seed,
//! for a deployment whose media runs on an external LiveKit.
//!
//! Signed-in users may only join rooms this surface created; an admin may join any room.

pub mod error;
pub mod wire;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::routing::post;
use axum::{Json, Router};
use convene_api::AppState;
use convene_api::auth::Principal;
use convene_core::ErrorCode;
use convene_core::ids::{DisplayName, Identity, RoomName};
use convene_core::login::{User, UserId};
use convene_core::meeting::{MeetingSettings, MeetingStatus, Metadata, Mode, WaitingPolicy};
use convene_core::participant::Role;
use convene_core::service::{Caller, NewMeeting};
use convene_token::{ACCESS_TTL, Signer};

use crate::created_by;
use crate::session::{self, SessionError};
use error::{JoinError, Result};
use wire::Joined;

/// The metadata mark of rooms this surface created.
const SURFACE: &str = "livekit-join";

/// Where tokens of this surface point: convene itself, or an external LiveKit.
#[derive(Clone, Default)]
pub struct Target {
    /// Signs tokens instead of convene's key (`LIVEKIT_API_KEY` / `LIVEKIT_API_SECRET`).
    pub signer: Option<Signer>,
    /// `LIVEKIT_SOCKET_URL`, instead of convene's signalling URL.
    pub socket_url: Option<String>,
}

#[derive(Clone)]
struct JoinState {
    app: AppState,
    target: Target,
}

/// The surface's routes.
pub fn router(state: AppState, target: Target) -> Router {
    let state = JoinState { app: state, target };
    Router::new()
        .route("/compat/livekit-join", post(join))
        .route("/compat/livekit-join/", post(join))
        .with_state(state)
}

/// The request's parameters (JSON or form), failures in this surface's shape.
type Form = crate::params::Form<JoinError>;

/// Who calls.
enum Who {
    User(User),
    Admin,
}

/// A user session (Bearer) or the admin key (Basic, or an admin JWT as Bearer).
async fn who(state: &AppState, headers: &HeaderMap) -> Result<Who> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(JoinError::unauthorized)?;
    if let Some(token) = convene_api::auth::bearer(header) {
        match session::verify(state, token).await {
            Ok(user) => return Ok(Who::User(user)),
            Err(SessionError::Failed(e)) => return Err(e.into()),
            Err(SessionError::Invalid(_)) => {}
        }
    }
    match convene_api::auth::authenticate(state, header, &[]).await {
        Ok(Principal::Admin { .. }) => Ok(Who::Admin),
        Ok(Principal::Participant(_)) => Err(JoinError::unauthorized()),
        Err(e) if matches!(e.code, ErrorCode::Unauthenticated | ErrorCode::InvalidToken) => {
            Err(JoinError::unauthorized())
        }
        Err(e) => Err(e.into()),
    }
}

fn new_room(room: &RoomName) -> Result<NewMeeting> {
    let name =
        DisplayName::parse(room.as_str()).map_err(|e| JoinError::invalid("roomName", &e.reason))?;
    let metadata = Metadata::parse(serde_json::json!({ "compat": SURFACE }))
        .map_err(|e| JoinError::invalid("metadata", &e.reason))?;
    Ok(NewMeeting {
        id: None,
        digits: None,
        room_name: Some(room.clone()),
        settings: MeetingSettings {
            metadata,
            ..MeetingSettings::new(name, Mode::Meeting, WaitingPolicy::Open)
        },
        host_credential: None,
        participant_credential: None,
        viewer_credential: None,
    })
}

/// `POST /` (`roomName`, `uid`) -> `{"msg": "Success", "livekit_socket_url", "access_token"}`.
async fn join(
    State(state): State<JoinState>,
    headers: HeaderMap,
    Form { params, .. }: Form,
) -> Result<Json<Joined>> {
    let JoinState { app, target } = state;
    let who = who(&app, &headers).await?;
    let room_name = params.required("roomName")?;
    let uid = params.required("uid")?;
    let room =
        RoomName::parse(&room_name).map_err(|e| JoinError::invalid("roomName", &e.reason))?;
    let identity = Identity::parse(&uid).map_err(|e| JoinError::invalid("uid", &e.reason))?;
    let name = match &who {
        Who::User(user) => {
            if user.id.as_str() != identity.as_str() {
                return Err(JoinError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "uid is not the signed-in user",
                ));
            }
            user.name.clone()
        }
        // The admin names any uid; a known user keeps their name.
        Who::Admin => match UserId::parse(identity.as_str()) {
            Ok(id) => app.logins.user(&id).await?.map(|u| u.name),
            Err(_) => None,
        }
        .map_or_else(|| DisplayName::parse(identity.as_str()), Ok)
        .map_err(|e| JoinError::invalid("uid", &e.reason))?,
    };
    let request = new_room(&room)?;
    let meeting = app.meetings.ensure_room(&room, || request.clone()).await?;
    if matches!(who, Who::User(_)) && !created_by(&meeting, SURFACE) {
        return Err(JoinError::new(
            axum::http::StatusCode::FORBIDDEN,
            "Error joining room: this room is not open to signed-in users",
        ));
    }
    if meeting.status == MeetingStatus::Ended {
        // LiveKit creates a closed room again on the next join.
        app.meetings
            .start_meeting(&meeting.id, &Caller::Admin)
            .await?;
    }
    // Someone already in the room keeps their role (a host stays host); a newcomer speaks.
    // Entered and joined in one change (one commit).
    let (meeting, participant) = app
        .meetings
        .enter_and_join_trusted(&meeting.id, identity, name, Role::Speaker)
        .await?;
    // The seed's own LiveKit key pair when configured; otherwise the token of convene's media
    // engine (with an external LiveKit, the short-lived plain token minted only for someone who
    // may connect: that deployment cannot ask convene before a join).
    let access_token = match &target.signer {
        Some(signer) => {
            signer.access_token(&meeting, &participant, app.meetings.now(), ACCESS_TTL)?
        }
        None => app.media_token(&meeting, &participant)?,
    };
    let livekit_socket_url = match &target.socket_url {
        Some(url) => url.clone(),
        None => app.media_url(&meeting).await?,
    };
    Ok(Json(Joined {
        msg: "Success",
        livekit_socket_url,
        access_token,
    }))
}
