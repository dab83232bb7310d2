//! Seed 003: the BigBlueButton interface, at `/compat/bbb` (on when `CONVENE_COMPAT_BBB_TOKEN`
//! is set).
//!
//! Every route answers `POST` with parameters as JSON or a form, and needs
//! `Authorization: <token>` (the bare token, compared in constant time; failures counted per
//! client address through [`Meetings::check_guess`]). Errors are `{"message"}` ([`error`]).
//! Meeting passwords are checked through [`Meetings::check_credential`] (the moderator
//! password, the host credential, has its own counter).
//!
//! * `/create` makes a convene meeting (policy `ask_host`, so guests wait for a moderator) and
//!   opens it at once, as BigBlueButton does: `moderator_pass` is the host credential,
//!   `attendee_pass` the participant (speaker) credential, `max_participant` the capacity,
//!   `redirect_at_logout` the logout URL. `create_time` is the current run's opening time in ms.
//! * `/join` checks the password (it decides the role), that `create_time` names the meeting's
//!   current run, and the capacity; places the person (a guest through the waiting room), and
//!   answers `302` to `{public_url}/meet?join=<link>`: a one-time join link (a signed token with
//!   a random nonce, valid [`JOIN_LINK_TTL`]) that the meeting page exchanges once at
//!   `POST /v1/join-links/exchange` for its tokens.
//!
//! [`Meetings::check_guess`]: convene_core::service::Meetings::check_guess
//! [`Meetings::check_credential`]: convene_core::service::Meetings::check_credential

pub mod error;
pub mod wire;

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::header::{CACHE_CONTROL, LOCATION, REFERRER_POLICY};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use convene_api::AppState;
use convene_api::auth::ClientAddr;
use convene_core::ids::{Credential, DisplayName, Identity, MeetingId};
use convene_core::meeting::{
    LogoutUrl, Meeting, MeetingSettings, MeetingStatus, Metadata, Mode, WaitingPolicy,
};
use convene_core::participant::{ParticipantState, Role};
use convene_core::service::{Caller, NewMeeting};
use convene_core::{ErrorCode, ValidationError};
use rand::Rng;

use crate::created_by;
use crate::params::Params;
use crate::secret::HeaderSecret;
use error::{BbbError, Result};
use wire::Created;

/// The metadata mark of meetings this surface created; it serves no other meetings.
const SURFACE: &str = "bbb";
/// The failure counter of the `Authorization` token (the core also counts per client address).
const TOKEN_KEY: &str = "compat:bbb:token";
/// How long a join link may wait before it is exchanged (the browser follows the redirect at once).
pub const JOIN_LINK_TTL: Duration = Duration::from_secs(300);
/// Length of a generated meeting password.
const PASSWORD_LEN: usize = 20;

/// The surface's state: the app's, and the token's digest.
#[derive(Clone)]
pub struct BbbState {
    pub app: AppState,
    token: HeaderSecret,
}

/// The surface's routes.
pub fn router(state: AppState, token: String) -> Router {
    let state = BbbState {
        app: state,
        token: HeaderSecret::new(TOKEN_KEY, &token),
    };
    Router::new()
        .route("/create", post(create))
        .route("/join", post(join))
        .fallback(|| async { BbbError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            BbbError::new(StatusCode::METHOD_NOT_ALLOWED, "use POST")
        })
        .with_state(state)
}

/// Proof that the request carried the surface's token.
pub struct Authorized;

impl FromRequestParts<BbbState> for Authorized {
    type Rejection = BbbError;

    async fn from_request_parts(parts: &mut Parts, state: &BbbState) -> Result<Self> {
        match state.token.check(&state.app, parts).await {
            Ok(true) => Ok(Self),
            Ok(false) => Err(BbbError::unauthorized()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The request's parameters (JSON or form), failures in this surface's shape.
type Form = crate::params::Form<BbbError>;

/// A validation error named after the parameter the client sent.
fn renamed(error: ValidationError, parameter: &str) -> BbbError {
    ValidationError::new(parameter, error.reason).into()
}

fn password_param(params: &Params, name: &str) -> Result<Option<Credential>> {
    params
        .text(name)?
        .map(|p| Credential::parse(&p).map_err(|e| renamed(e, name)))
        .transpose()
}

fn generate_password() -> Credential {
    let text: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect();
    Credential::parse(&text).expect("alphanumeric text is a credential")
}

/// The seed's `create_time`: the current run's opening time in milliseconds.
pub fn create_time(meeting: &Meeting) -> String {
    meeting.run.opened_at.as_millis().to_string()
}

/// `POST /create` (`name`; optional `attendee_pass`, `moderator_pass`, `max_participant`,
/// `redirect_at_logout`).
async fn create(
    State(state): State<BbbState>,
    _auth: Authorized,
    Form { params, .. }: Form,
) -> Result<Json<Created>> {
    let state = state.app;
    let name = DisplayName::parse(&params.required("name")?).map_err(|e| renamed(e, "name"))?;
    let attendee = password_param(&params, "attendee_pass")?.unwrap_or_else(generate_password);
    let moderator = password_param(&params, "moderator_pass")?.unwrap_or_else(generate_password);
    if attendee == moderator {
        return Err(BbbError::new(
            StatusCode::BAD_REQUEST,
            "attendee_pass and moderator_pass must differ",
        ));
    }
    // BigBlueButton reads 0 (and absence) as "no limit".
    let capacity = match params.integer("max_participant")? {
        None | Some(0) => None,
        Some(n) => Some(u32::try_from(n).map_err(|_| {
            BbbError::new(
                StatusCode::BAD_REQUEST,
                "max_participant must be 0 (no limit) or a positive integer",
            )
        })?),
    };
    let logout_url = params
        .text("redirect_at_logout")?
        .map(|u| LogoutUrl::parse(&u).map_err(|e| renamed(e, "redirect_at_logout")))
        .transpose()?;
    let mut settings = MeetingSettings::new(name, Mode::Meeting, WaitingPolicy::AskHost);
    settings.capacity = capacity;
    settings.logout_url = logout_url;
    settings.metadata = Metadata::parse(serde_json::json!({ "compat": SURFACE }))?;
    let request = NewMeeting {
        id: None,
        digits: None,
        room_name: None,
        settings,
        host_credential: Some(moderator.clone()),
        participant_credential: Some(attendee.clone()),
        viewer_credential: None,
    };
    let meeting = state.meetings.create_meeting(request).await?;
    // A BigBlueButton meeting runs from its creation: anyone with a password may join at once.
    let meeting = state
        .meetings
        .start_meeting(&meeting.id, &Caller::Admin)
        .await?;
    Ok(Json(Created {
        meeting_id: meeting.id.to_string(),
        attendee_pass: attendee.reveal().to_owned(),
        moderator_pass: moderator.reveal().to_owned(),
        create_time: create_time(&meeting),
        created_at: wire::seed_date(meeting.run.opened_at),
    }))
}

/// This surface's meeting with the given id, or 404.
async fn own_meeting(state: &AppState, raw: &str) -> Result<Meeting> {
    let id = MeetingId::parse(raw).map_err(|_| BbbError::meeting_not_found())?;
    match state.meetings.meeting(&id).await {
        Ok(meeting) if created_by(&meeting, SURFACE) => Ok(meeting),
        Ok(_) => Err(BbbError::meeting_not_found()),
        Err(e) if e.code() == ErrorCode::MeetingNotFound => Err(BbbError::meeting_not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `POST /join` (`name`, `meeting_id`, `password`, `create_time`; optional `user_id`, `avatar`,
/// `is_guest`) -> `302` to the meeting page with a one-time join link.
async fn join(
    State(state): State<BbbState>,
    _auth: Authorized,
    client: ClientAddr,
    Form { params, .. }: Form,
) -> Result<Response> {
    let state = state.app;
    let name = DisplayName::parse(&params.required("name")?).map_err(|e| renamed(e, "name"))?;
    let raw_id = params.required("meeting_id")?;
    let password = params.required("password")?;
    let given_time = params.required("create_time")?;
    let identity = params
        .text("user_id")?
        .map(|u| Identity::parse(&u).map_err(|e| renamed(e, "user_id")))
        .transpose()?;
    let avatar = params
        .text("avatar")?
        .map(|u| LogoutUrl::parse(&u).map_err(|e| renamed(e, "avatar")))
        .transpose()?;
    let guest = params.boolean("is_guest")?.unwrap_or(false);

    let meeting = own_meeting(&state, &raw_id).await?;
    // Wrong passwords are counted per meeting and per client address, like every credential.
    let role = match meeting.credentials.role_for(&password) {
        Some(role @ (Role::Host | Role::Speaker)) => Some(role),
        _ => None,
    };
    let guess_key = format!("compat:bbb:password:{}", meeting.id);
    match state
        .meetings
        .check_credential(&guess_key, &client.key(), role)
        .await
    {
        Ok(()) => {}
        Err(e) if e.code() == ErrorCode::MeetingAccessDenied => {
            return Err(BbbError::wrong_password());
        }
        Err(e) => return Err(e.into()),
    }
    let role = role.ok_or_else(BbbError::wrong_password)?;
    if given_time != create_time(&meeting) {
        return Err(BbbError::create_time_mismatch());
    }
    if meeting.status == MeetingStatus::Ended {
        return Err(BbbError::meeting_ended());
    }
    let identity = identity.unwrap_or_else(|| Identity::generate(&mut rand::rng()));
    if let Some(capacity) = meeting.settings.capacity
        && role != Role::Host
    {
        let joined = state
            .meetings
            .participants(&meeting.id, Some(&[ParticipantState::Joined]))
            .await?;
        let in_run = joined
            .iter()
            .filter(|p| {
                p.admitted_in.as_ref() == Some(&meeting.run.instance_id) && p.identity != identity
            })
            .count() as u64;
        if in_run >= u64::from(capacity) {
            return Err(BbbError::meeting_full());
        }
    }
    let (meeting, participant) = if guest {
        state
            .meetings
            .enter_untrusted(&meeting.id, identity, name, role)
            .await?
    } else {
        state
            .meetings
            .enter_trusted(&meeting.id, identity, name, role)
            .await?
    };
    let nonce = random_nonce();
    let link = state.signer.join_link_token(
        &meeting,
        &participant,
        &nonce,
        state.meetings.now(),
        JOIN_LINK_TTL,
    )?;
    let mut location = url::Url::parse(&format!("{}/meet", state.urls.http.trim_end_matches('/')))
        .map_err(|_| BbbError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"))?;
    location.query_pairs_mut().append_pair("join", &link);
    if let Some(avatar) = &avatar {
        location
            .query_pairs_mut()
            .append_pair("avatar", avatar.as_str());
    }
    let location = HeaderValue::from_str(location.as_str())
        .map_err(|_| BbbError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"))?;
    Ok((
        StatusCode::FOUND,
        [
            (LOCATION, location),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
    )
        .into_response())
}

/// 128 random bits, hex: the join link's one-time id.
fn random_nonce() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
