//! Seed 004: the mesibo sample conferencing app's private backend API, at `/compat/mesibo/api`
//! (also `/compat/mesibo/api.php`, the original's file name).
//!
//! One URL; `op` picks the operation, from the query string or a form (or JSON) body, by `GET` or
//! `POST` (the body wins over the query string, as PHP's `$_REQUEST`).
//!
//! | `op` | parameters | does |
//! |---|---|---|
//! | `login` | `appid`, `name`, `email` | emails a one-time code ([`convene_core::login`]) |
//! | `login` | ... and `code` | checks it: the user's `token` (a convene session) and `uid` |
//! | `setgroup` | `token`, `name`, `resolution`, (`type`) | a room: `gid`, `pin` (publish and view), `spin` (view only) |
//! | `joingroup` | `token`, `gid`, `pin` | enters the room: `publish`, a LiveKit `access_token` and `url` |
//! | anything else | | `{"code": "NOOP", "result": "FAIL"}` |
//!
//! A group is a convene meeting (policy `open`) whose id is `gid`, marked as this surface's, with
//! its creator's user id in the metadata; `pin` is the meeting's speaker credential, `spin` its
//! viewer credential, and `resolution` its quality preset. Everyone enters under their user id
//! as identity. `joingroup` checks the pin through the core's guessing limits
//! ([`Meetings::check_credential`]): an unknown group and a wrong pin get the same answer, failures
//! are counted per group and per client address in the store. The creator enters as host with
//! any pin but `spin` (which makes them a viewer), as in the original.
//!
//! [`Meetings::check_credential`]: convene_core::service::Meetings::check_credential

pub mod error;
pub mod wire;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use convene_api::AppState;
use convene_api::auth::ClientAddr;
use convene_core::ErrorCode;
use convene_core::ids::{DisplayName, Identity, MeetingId, MeetingIdDigits};
use convene_core::login::{Email, User};
use convene_core::meeting::{
    Meeting, MeetingSettings, Metadata, Mode, QualityPreset, WaitingPolicy,
};
use convene_core::participant::Role;
use convene_core::service::{Caller, NewMeeting};

use crate::created_by;
use crate::params::Params;
use crate::session;
use error::{MesiboError, NoOp, Result};
use wire::{JoinGroupOk, LoginOk, LoginSent, SetGroupOk};

/// The metadata mark of meetings this surface created; it serves no other meetings.
const SURFACE: &str = "mesibo";
/// Group ids are answered as JSON numbers: at most 15 digits stay exact in JavaScript.
const MAX_GID_DIGITS: u8 = 15;
/// `type` is the app's own room kind, echoed back; any small non-negative number.
const MAX_TYPE: i64 = 1 << 30;

/// The surface's routes: one endpoint, every method.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api", any(api))
        .route("/api.php", any(api))
        .with_state(state)
}

/// The one endpoint: reads the parameters, dispatches on `op`, renders success or failure.
async fn api(State(state): State<AppState>, client: ClientAddr, request: Request) -> Response {
    let ts = state.meetings.now().as_secs();
    let query = match Params::from_query(request.uri().query().unwrap_or_default()) {
        Ok(query) => query,
        Err(e) => return MesiboError::from(e).render("", ts),
    };
    let body = if request.method() == Method::POST {
        Params::from_body(request).await
    } else {
        Ok(Params::default())
    };
    let op = query.text("op").ok().flatten();
    let params = match body {
        Ok(body) => body.or(query),
        Err(e) => return MesiboError::from(e).render(op.as_deref().unwrap_or_default(), ts),
    };
    let op = params.text("op").ok().flatten().unwrap_or_default();
    let answer = match op.as_str() {
        "login" => login(&state, &client, &params, ts).await,
        "setgroup" => set_group(&state, &params, ts).await,
        "joingroup" => join_group(&state, &client, &params, ts).await,
        _ => return Json(NoOp::ANSWER).into_response(),
    };
    answer.unwrap_or_else(|e| e.render(&op, ts))
}

/// `op=login`: without `code`, emails a code; with it, checks the code and answers the token.
async fn login(
    state: &AppState,
    client: &ClientAddr,
    params: &Params,
    ts: i64,
) -> Result<Response> {
    let email = params.required("email")?;
    params.required("appid")?;
    let name = params.required("name")?;
    let email = Email::parse(&email).map_err(|e| MesiboError::new("BADEMAIL", e.to_string()))?;
    let name = DisplayName::parse(&name)?;
    match params.text("code")? {
        None => {
            state.limits.check(client.0)?;
            state
                .logins
                .send_code(&email, &name, &client.key())
                .await
                .map_err(|e| match e.code() {
                    ErrorCode::MailFailed => {
                        tracing::error!(error = %e, "mesibo login: the code could not be mailed");
                        MesiboError::new("MAILFAILED", ErrorCode::MailFailed.spec().message)
                    }
                    _ => e.into(),
                })?;
            Ok(Json(LoginSent {
                op: "login",
                ts,
                result: "OK",
            })
            .into_response())
        }
        Some(code) => {
            let user = state.logins.sign_in(&email, &name, &code).await?;
            let token = session::issue(state, &user)?;
            Ok(Json(LoginOk {
                op: "login",
                ts,
                token,
                uid: user.id.as_u64(),
                name: user.name.to_string(),
                result: "OK",
            })
            .into_response())
        }
    }
}

/// The signed-in user of `token=`.
async fn user(state: &AppState, params: &Params) -> Result<User> {
    let token = params.text("token")?.ok_or_else(MesiboError::auth)?;
    Ok(session::verify(state, &token).await?)
}

fn owner(meeting: &Meeting) -> Option<&str> {
    meeting
        .settings
        .metadata
        .as_map()
        .get("owner")
        .and_then(|v| v.as_str())
}

fn kind(meeting: &Meeting) -> i64 {
    meeting
        .settings
        .metadata
        .as_map()
        .get("type")
        .and_then(|v| v.as_i64())
        .unwrap_or(0)
}

fn resolution(meeting: &Meeting) -> String {
    meeting.settings.quality.resolution_index().to_string()
}

fn small_number(params: &Params, name: &str) -> Result<i64> {
    match params.integer(name)? {
        None => Ok(0),
        Some(n) if (0..MAX_TYPE).contains(&n) => Ok(n),
        Some(_) => Err(MesiboError::new(
            "BADPARA",
            format!("{name} must be a small non-negative number"),
        )),
    }
}

/// `op=setgroup&token=&name=&resolution=`: a new room whose creator is the caller. With `gid=`
/// of a room the caller created: renames it and sets its resolution (the original's update).
async fn set_group(state: &AppState, params: &Params, ts: i64) -> Result<Response> {
    let user = user(state, params).await?;
    let name = DisplayName::parse(&params.required("name")?)?;
    let quality = match params.integer("resolution")? {
        None => QualityPreset::Default,
        Some(index) => QualityPreset::from_resolution_index(index)?,
    };
    let kind = small_number(params, "type")?;
    let metadata = Metadata::parse(
        serde_json::json!({ "compat": SURFACE, "owner": user.id.as_str(), "type": kind }),
    )?;
    let settings = MeetingSettings {
        quality,
        metadata,
        ..MeetingSettings::new(name, Mode::Meeting, WaitingPolicy::Open)
    };
    let meeting = match params.text("gid")? {
        Some(gid) => {
            let id = MeetingId::parse(&gid).map_err(|_| MesiboError::bad_group())?;
            let meeting = match state.meetings.meeting(&id).await {
                Ok(m) if created_by(&m, SURFACE) && owner(&m) == Some(user.id.as_str()) => m,
                Ok(_) => return Err(MesiboError::bad_group()),
                Err(e) if e.code() == ErrorCode::MeetingNotFound => {
                    return Err(MesiboError::bad_group());
                }
                Err(e) => return Err(e.into()),
            };
            state
                .meetings
                .update_meeting(&meeting.id, settings, None)
                .await?
        }
        None => {
            let digits = MeetingIdDigits::new(
                state
                    .meetings
                    .default_digits()
                    .get()
                    .min(MAX_GID_DIGITS)
                    .into(),
            )?;
            let request = NewMeeting {
                id: None,
                digits: Some(digits),
                room_name: None,
                settings,
                host_credential: None,
                participant_credential: None,
                viewer_credential: None,
            };
            state.meetings.create_meeting(request).await?
        }
    };
    Ok(Json(SetGroupOk {
        op: "setgroup",
        ts,
        gid: meeting.id.as_u64(),
        name: meeting.settings.name.to_string(),
        kind: self::kind(&meeting),
        resolution: resolution(&meeting),
        publish: 1,
        pin: meeting.credentials.participant.reveal().to_owned(),
        spin: meeting.credentials.viewer.reveal().to_owned(),
        result: "OK",
    })
    .into_response())
}

/// `op=joingroup&token=&gid=&pin=`: enters the room with the role the pin grants.
async fn join_group(
    state: &AppState,
    client: &ClientAddr,
    params: &Params,
    ts: i64,
) -> Result<Response> {
    let user = user(state, params).await?;
    let gid = params.required("gid")?;
    let pin = params.text("pin")?;
    // One guessing key per group id as given (bounded), whether or not such a group exists.
    let guess_key: String = format!(
        "compat:mesibo:group:{}",
        gid.chars().take(32).collect::<String>()
    );
    let meeting = match MeetingId::parse(&gid) {
        Ok(id) => match state.meetings.meeting(&id).await {
            Ok(m) if created_by(&m, SURFACE) => Some(m),
            Ok(_) => None,
            Err(e) if e.code() == ErrorCode::MeetingNotFound => None,
            Err(e) => return Err(e.into()),
        },
        Err(_) => None,
    };
    let is_creator = meeting
        .as_ref()
        .is_some_and(|m| owner(m) == Some(user.id.as_str()));
    let role = match (&meeting, pin.as_deref()) {
        // The creator enters as host with any pin, and as a viewer with the view-only pin.
        (Some(m), pin) if is_creator => match pin {
            Some(pin) if m.credentials.viewer.matches(pin) => Role::Viewer,
            _ => Role::Host,
        },
        (_, None) => return Err(MesiboError::missing("pin")),
        (meeting, Some(pin)) => {
            let role = meeting.as_ref().and_then(|m| m.credentials.role_for(pin));
            state
                .meetings
                .check_credential(&guess_key, &client.key(), role)
                .await
                .map_err(|e| match e.code() {
                    ErrorCode::MeetingAccessDenied => MesiboError::bad_group(),
                    _ => e.into(),
                })?;
            role.ok_or_else(MesiboError::bad_group)?
        }
    };
    let meeting = meeting.ok_or_else(MesiboError::bad_group)?;
    let identity = Identity::parse(user.id.as_str())?;
    let (meeting, participant) = state
        .meetings
        .enter_trusted(&meeting.id, identity, user.name.clone(), role)
        .await?;
    let caller = Caller::Participant {
        identity: participant.identity.clone(),
        instance: meeting.run.instance_id.clone(),
        epoch: participant.epoch,
    };
    let (meeting, participant) = state.meetings.join(&meeting.id, &caller).await?;
    let access_token = state.media_token(&meeting, &participant)?;
    Ok(Json(JoinGroupOk {
        op: "joingroup",
        ts,
        gid: meeting.id.as_u64(),
        name: meeting.settings.name.to_string(),
        kind: kind(&meeting),
        resolution: resolution(&meeting),
        publish: u8::from(participant.role.can_publish()),
        access_token,
        url: state.media_url(&meeting).await?,
        pin: is_creator.then(|| meeting.credentials.participant.reveal().to_owned()),
        spin: is_creator.then(|| meeting.credentials.viewer.reveal().to_owned()),
        result: "OK",
    })
    .into_response())
}
