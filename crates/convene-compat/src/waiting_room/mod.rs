//! Seed 000: the waiting-room meeting API (Twilio Video + Sync), at `/compat/waiting-room`.
//!
//! | route (all `POST`) | who | does |
//! |---|---|---|
//! | `/admin/create` | API key | a `wait_for_host` meeting with an id of `n_digits` digits |
//! | `/admin/join` | API key | places a host and joins: the first join starts the meeting and admits the waiting room at once |
//! | `/user/enter-waiting-room` | anyone (rate-limited) | an anonymous guest enters the waiting room: document, identity, waiting token |
//! | `/user/join` | the guest | the guest's media token, once the meeting is live, for the current room only |
//! | `/user/waiting-room-state` | the guest's token | the waiting-room document's value (convene addition) |
//!
//! The waiting-room document (Twilio Sync in the original) is a view computed from the core: see
//! [`wire::WaitingRoomState`]; its changes are the `meeting.started`, `meeting.ended` and
//! `participant.admitted` events on convene's event channel, which the guest reads with its
//! waiting-room token. Parameters come as JSON or as a form ([`crate::params`]); errors are the
//! seed's `"Error: ..."` strings ([`error`]).
//!
//! The meeting id is the only secret a guest needs, so the anonymous routes count every unknown
//! id (and, on `/user/join`, every identity nobody handed out) as a failure of the client's
//! address in the store ([`Meetings::check_id_lookup`]), and check that counter before they
//! answer anything about a meeting; ids have at least [`MIN_DIGITS`] digits.
//!
//! [`Meetings::check_id_lookup`]: convene_core::service::Meetings::check_id_lookup

pub mod error;
pub mod wire;

use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use convene_api::AppState;
use convene_api::auth::{Admin, ClientAddr, Principal};
use convene_core::ErrorCode;
use convene_core::ids::{DisplayName, Identity, MeetingId, MeetingIdDigits};
use convene_core::meeting::{
    Meeting, MeetingSettings, MeetingStatus, Metadata, Mode, QualityPreset, WaitingPolicy,
};
use convene_core::participant::{Participant, ParticipantState, Role};
use convene_core::service::{Caller, NewMeeting};
use convene_token::{TokenKind, WAITING_TTL};

use crate::created_by;
use crate::params::Params;
use error::{Result, WaitingRoomError};
use wire::{CreateResponse, DocumentResponse, EnterResponse, JoinResponse, WaitingRoomState};

/// The metadata mark of meetings this surface created; it serves no other meetings.
const SURFACE: &str = "waiting-room";
/// `n_digits` bounds. The id is the only secret a guest needs, so it must be too long to guess:
/// with unknown ids counted against the address (at most 4,320 a day), 10 digits keep one
/// address's chance of finding one of 10,000 open meetings under 0.5% a day (the arithmetic is
/// in `docs/compat/seed-000-waiting-room.md`). The id is answered as a JSON number, exact in
/// JavaScript up to 15 digits.
pub const MIN_DIGITS: i64 = 10;
pub const MAX_DIGITS: i64 = 15;

/// The surface's routes; every route answers `POST`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/create", post(admin_create))
        .route("/admin/join", post(admin_join))
        .route("/user/enter-waiting-room", post(enter_waiting_room))
        .route("/user/join", post(user_join))
        .route("/user/waiting-room-state", post(waiting_room_state))
        .fallback(|| async { WaitingRoomError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            WaitingRoomError::bad_request("this route answers POST only")
        })
        .with_state(state)
}

/// The request's parameters (JSON or form), failures in this surface's shape.
type Form = crate::params::Form<WaitingRoomError>;

/// An API key holder (Basic key:secret or an admin JWT), as in the native API.
pub struct AdminKey;

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = WaitingRoomError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match Admin::from_request_parts(parts, state).await {
            Ok(_) => Ok(Self),
            Err(e) if matches!(e.code, ErrorCode::Unauthenticated | ErrorCode::InvalidToken) => {
                Err(WaitingRoomError::forbidden(
                    "this call needs the admin API key (Authorization: Basic key:secret, or an admin JWT)",
                ))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn meeting_id_param(params: &Params) -> Result<MeetingId> {
    Ok(MeetingId::parse(&params.required("meeting_id")?)?)
}

fn meeting_not_found() -> WaitingRoomError {
    WaitingRoomError::not_found("meeting not found")
}

/// A meeting this surface created, if `id` names one (the surface serves no other meetings).
async fn find_own_meeting(state: &AppState, id: &MeetingId) -> Result<Option<Meeting>> {
    match state.meetings.meeting(id).await {
        Ok(meeting) if created_by(&meeting, SURFACE) => Ok(Some(meeting)),
        Ok(_) => Ok(None),
        Err(e) if e.code() == ErrorCode::MeetingNotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A meeting this surface created, or 404 (for the admin, who needs no guessing limit).
async fn own_meeting(state: &AppState, id: &MeetingId) -> Result<Meeting> {
    find_own_meeting(state, id)
        .await?
        .ok_or_else(meeting_not_found)
}

/// A meeting named by an anonymous caller, for whom the id is the secret: refused with the lock
/// answer (403 `too many requests`) while the caller's address is locked out, even for an id that
/// exists; an unknown id is a 404 that counts against the address.
async fn guessed_meeting(state: &AppState, client: &ClientAddr, id: &MeetingId) -> Result<Meeting> {
    let meeting = find_own_meeting(state, id).await?;
    state
        .meetings
        .check_id_lookup(&client.key(), meeting.is_some())
        .await
        .map_err(|e| match e.code() {
            ErrorCode::MeetingNotFound => meeting_not_found(),
            _ => e.into(),
        })?;
    meeting.ok_or_else(meeting_not_found)
}

/// Counts a miss by an anonymous caller (an identity nobody handed out) against its address:
/// `answer`, or the lock answer when the address is locked out.
async fn missed(
    state: &AppState,
    client: &ClientAddr,
    answer: WaitingRoomError,
) -> WaitingRoomError {
    match state.meetings.check_id_lookup(&client.key(), false).await {
        Err(e) if e.code() != ErrorCode::MeetingNotFound => e.into(),
        _ => answer,
    }
}

fn settings() -> Result<MeetingSettings> {
    Ok(MeetingSettings {
        name: DisplayName::parse("Meeting with a waiting room")?,
        mode: Mode::Meeting,
        policy: WaitingPolicy::WaitForHost,
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

fn document_name(meeting: &Meeting) -> String {
    format!("waiting-room.{}", meeting.id)
}

/// The waiting-room document's value for one guest.
pub fn document_state(meeting: &Meeting, participant: &Participant) -> WaitingRoomState {
    let room_open = meeting.is_live()
        && participant.state.is_member()
        && participant.admitted_in.as_ref() == Some(&meeting.run.instance_id);
    WaitingRoomState {
        room_open,
        room_id: room_open.then(|| meeting.room_name.to_string()),
        meeting_status: match meeting.status {
            MeetingStatus::Created => "created",
            MeetingStatus::Live => "live",
            MeetingStatus::Ended => "ended",
        },
    }
}

async fn join_response(
    state: &AppState,
    meeting: &Meeting,
    participant: &Participant,
) -> Result<Json<JoinResponse>> {
    let tokens = state.join_tokens(meeting, participant)?;
    Ok(Json(JoinResponse {
        room_id: meeting.room_name.to_string(),
        identity: participant.identity.to_string(),
        token: tokens.media,
        api_token: tokens.api,
        url: state.media_url(meeting).await?,
        events_url: state.urls.events(meeting.id.as_str()),
    }))
}

/// A token from `Authorization: Bearer ...` or the `token` parameter.
fn presented_token(headers: &HeaderMap, params: &Params) -> Result<Option<String>> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(convene_api::auth::bearer)
        .map(str::to_owned);
    match header {
        Some(token) => Ok(Some(token)),
        None => Ok(params.text("token")?),
    }
}

/// A verified guest token (waiting-room or access) for this meeting.
async fn guest_token(state: &AppState, token: &str) -> Result<convene_token::ParticipantToken> {
    let principal = convene_api::auth::authenticate_token(
        state,
        token,
        &[TokenKind::Waiting, TokenKind::Access],
        state.meetings.now(),
    )
    .await
    .map_err(|e| match e.code {
        ErrorCode::InvalidToken | ErrorCode::Unauthenticated => {
            WaitingRoomError::forbidden(format!("invalid token: {}", e.message))
        }
        _ => e.into(),
    })?;
    match principal {
        Principal::Participant(token) => Ok(token),
        Principal::Admin { .. } => Err(WaitingRoomError::forbidden(
            "this call needs the guest's waiting-room token",
        )),
    }
}

/// `POST /admin/create` (`n_digits` optional): a new meeting; guests wait until a host joins.
async fn admin_create(
    State(state): State<AppState>,
    _admin: AdminKey,
    Form { params, .. }: Form,
) -> Result<Json<CreateResponse>> {
    let digits = match params.integer("n_digits")? {
        // A server default outside the surface's bounds is brought into them.
        None => MeetingIdDigits::new(
            i64::from(state.meetings.default_digits().get()).clamp(MIN_DIGITS, MAX_DIGITS),
        )?,
        Some(n) if (MIN_DIGITS..=MAX_DIGITS).contains(&n) => MeetingIdDigits::new(n)?,
        Some(_) => {
            return Err(WaitingRoomError::bad_request(format!(
                "n_digits must be between {MIN_DIGITS} and {MAX_DIGITS}"
            )));
        }
    };
    let request = NewMeeting {
        id: None,
        digits: Some(digits),
        room_name: None,
        settings: settings()?,
        host_credential: None,
        participant_credential: None,
        viewer_credential: None,
    };
    let meeting = state.meetings.create_meeting(request).await.map_err(|e| {
        let inner = WaitingRoomError::from(e);
        WaitingRoomError::new(
            inner.status,
            format!("couldn't create the new meeting: {}", inner.message),
        )
    })?;
    Ok(Json(CreateResponse {
        meeting_id: meeting.id.as_u64(),
    }))
}

/// `POST /admin/join` (`meeting_id`): places a host and joins; the first join starts the meeting,
/// which admits everyone waiting in the same change (so they are all told at once).
async fn admin_join(
    State(state): State<AppState>,
    _admin: AdminKey,
    Form { params, .. }: Form,
) -> Result<Json<JoinResponse>> {
    let id = meeting_id_param(&params)?;
    own_meeting(&state, &id).await?;
    let generated = Identity::generate(&mut rand::rng());
    let identity = Identity::parse(&generated.as_str().replacen("guest-", "host-", 1))?;
    let (meeting, host) = state
        .meetings
        .enter_trusted(&id, identity, DisplayName::parse("Host")?, Role::Host)
        .await?;
    let caller = Caller::Participant {
        identity: host.identity,
        instance: meeting.run.instance_id,
        epoch: host.epoch,
    };
    let (meeting, host) = state.meetings.join(&id, &caller).await?;
    join_response(&state, &meeting, &host).await
}

/// `POST /user/enter-waiting-room` (`meeting_id`): an anonymous guest enters the waiting room.
async fn enter_waiting_room(
    State(state): State<AppState>,
    client: ClientAddr,
    Form { params, .. }: Form,
) -> Result<Json<EnterResponse>> {
    state.limits.check(client.0)?;
    let id = meeting_id_param(&params)?;
    guessed_meeting(&state, &client, &id).await?;
    let identity = Identity::generate(&mut rand::rng());
    let (meeting, guest) = state
        .meetings
        .enter_untrusted(&id, identity, DisplayName::parse("Guest")?, Role::Speaker)
        .await?;
    let token = state
        .signer
        .waiting_token(&meeting, &guest, state.meetings.now(), WAITING_TTL)?;
    Ok(Json(EnterResponse {
        document: document_name(&meeting),
        identity: guest.identity.to_string(),
        token,
        events_url: state.urls.events(meeting.id.as_str()),
        state: document_state(&meeting, &guest),
    }))
}

/// `POST /user/waiting-room-state` (the guest's token as `Authorization: Bearer` or `token`): the
/// waiting-room document's value now.
async fn waiting_room_state(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form { params, .. }: Form,
) -> Result<Json<DocumentResponse>> {
    let token = presented_token(&headers, &params)?
        .ok_or_else(|| WaitingRoomError::bad_request("missing token"))?;
    let token = guest_token(&state, &token).await?;
    let (meeting, guest) = state
        .meetings
        .check_participant_token(
            &token.meeting,
            &token.identity,
            &token.instance,
            token.epoch,
        )
        .await
        .map_err(|e| match e.code() {
            ErrorCode::InvalidToken => WaitingRoomError::forbidden("the token is no longer valid"),
            _ => e.into(),
        })?;
    if !created_by(&meeting, SURFACE) {
        return Err(WaitingRoomError::not_found("meeting not found"));
    }
    Ok(Json(DocumentResponse {
        document: document_name(&meeting),
        identity: guest.identity.to_string(),
        state: document_state(&meeting, &guest),
        last_seq: meeting.last_seq,
    }))
}

/// `POST /user/join` (`meeting_id`, `room_id`, `identity`): the guest's media token.
///
/// Only once the meeting is live, only for its current room, and only for the identity
/// enter-waiting-room handed out. Proof of that identity: the guest's waiting-room token (as
/// `Authorization: Bearer` or `token`) when given; without one (the seed's clients send none),
/// the identity must be a guest of this meeting that has not joined yet. Generated identities
/// carry 60 random bits and are known only to the guest and hosts until the guest joins; after
/// that, they show in the room, so joining again needs the token.
async fn user_join(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    Form { params, .. }: Form,
) -> Result<Json<JoinResponse>> {
    state.limits.check(client.0)?;
    let id = meeting_id_param(&params)?;
    let room_id = params.required("room_id")?;
    let identity = Identity::parse(&params.required("identity")?)?;
    let token = presented_token(&headers, &params)?;
    let meeting = guessed_meeting(&state, &client, &id).await?;
    match meeting.status {
        MeetingStatus::Live => {}
        MeetingStatus::Created => {
            return Err(WaitingRoomError::forbidden(
                "the meeting has not started yet; wait for the host",
            ));
        }
        MeetingStatus::Ended => return Err(WaitingRoomError::forbidden("the meeting has ended")),
    }
    if room_id != meeting.room_name.as_str() {
        return Err(WaitingRoomError::bad_request(
            "room_id is not this meeting's current room",
        ));
    }
    let caller = match token {
        Some(token) => {
            let token = guest_token(&state, &token).await?;
            if token.meeting != id || token.identity != identity {
                return Err(WaitingRoomError::forbidden(
                    "the token is for another meeting or identity",
                ));
            }
            Caller::Participant {
                identity: token.identity,
                instance: token.instance,
                epoch: token.epoch,
            }
        }
        None => {
            let wrong = || {
                WaitingRoomError::forbidden(
                    "this identity did not enter this meeting's waiting room",
                )
            };
            let guest = match state.meetings.participant(&id, &identity).await {
                Ok(guest) if guest.role != Role::Host => guest,
                Ok(_) => return Err(missed(&state, &client, wrong()).await),
                Err(e) if e.code() == ErrorCode::ParticipantNotFound => {
                    return Err(missed(&state, &client, wrong()).await);
                }
                Err(e) => return Err(e.into()),
            };
            if guest.state == ParticipantState::Joined {
                return Err(WaitingRoomError::forbidden(
                    "this identity has joined already; present its waiting-room token to join again",
                ));
            }
            Caller::Participant {
                identity: guest.identity,
                instance: meeting.run.instance_id.clone(),
                epoch: guest.epoch,
            }
        }
    };
    let (meeting, guest) = state
        .meetings
        .join(&id, &caller)
        .await
        .map_err(|e| match e.code() {
            ErrorCode::InvalidToken => WaitingRoomError::forbidden("the token is no longer valid"),
            ErrorCode::NotAdmitted => WaitingRoomError::forbidden("this guest has not been let in"),
            _ => e.into(),
        })?;
    join_response(&state, &meeting, &guest).await
}
