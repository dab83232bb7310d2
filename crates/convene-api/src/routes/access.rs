//! Getting in: enter with a credential (waiting room), place a person (admin), join (media
//! access token), leave, and read one's own state.

use axum::extract::State;
use convene_core::ErrorCode;
use convene_core::ids::DisplayName;
use convene_core::meeting::Meeting;
use convene_core::participant::Participant;
use convene_core::service::Caller;
use convene_token::WAITING_TTL;

use super::{OwnCall, identity, meeting_id};
use crate::auth::{Admin, ClientAddr};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::state::AppState;
use crate::wire::{
    AddParticipantRequest, EnterRequest, EnterResponse, JoinLinkRequest, JoinLinkResponse,
    JoinResponse, MeView, MeetingPublicView, Ok, ParticipantView,
};

/// The waiting-room answer for a person: their state and a waiting-room token.
pub fn enter_response(
    state: &AppState,
    meeting: &Meeting,
    participant: &Participant,
) -> ApiResult<EnterResponse> {
    let token =
        state
            .signer
            .waiting_token(meeting, participant, state.meetings.now(), WAITING_TTL)?;
    Ok(EnterResponse {
        identity: participant.identity.to_string(),
        role: participant.role.into(),
        state: participant.state.into(),
        token,
        events_url: state.urls.events(meeting.id.as_str()),
        meeting: MeetingPublicView::from(meeting),
    })
}

/// The media answer for a joined person.
pub async fn join_response(
    state: &AppState,
    meeting: &Meeting,
    participant: &Participant,
) -> ApiResult<JoinResponse> {
    let tokens = state.join_tokens(meeting, participant)?;
    Ok(JoinResponse {
        access_token: tokens.media,
        api_token: tokens.api,
        url: state.media_url(meeting).await?,
        room_name: meeting.room_name.to_string(),
        identity: participant.identity.to_string(),
        role: participant.role.into(),
        events_url: state.urls.events(meeting.id.as_str()),
        meeting: MeetingPublicView::from(meeting),
    })
}

/// Enter a meeting with a credential. You land in the waiting room or are admitted, by the
/// meeting's policy. An unknown meeting and a wrong credential get the same answer.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/enter", tag = "participants", request_body = EnterRequest,
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = EnterResponse)))]
pub async fn enter(
    State(state): State<AppState>,
    client: ClientAddr,
    Path(id): Path<String>,
    Json(request): Json<EnterRequest>,
) -> ApiResult<axum::Json<EnterResponse>> {
    state.limits.check(client.0)?;
    let name = DisplayName::parse(&request.name)?;
    let who = request.identity.as_deref().map(identity).transpose()?;
    if request.credential.chars().count() > convene_core::ids::Credential::MAX_LEN {
        return Err(convene_core::ValidationError::new(
            "credential",
            "must be at most 128 characters",
        )
        .into());
    }
    let (meeting, participant) = state
        .meetings
        .enter(&id, &request.credential, name, who, &client.key())
        .await?;
    Ok(axum::Json(enter_response(&state, &meeting, &participant)?))
}

/// Place a person in the meeting with a role, past the waiting room (trusted caller), and get
/// their media access token.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/participants", tag = "participants", request_body = AddParticipantRequest,
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = JoinResponse)), security(("api_key" = []), ("admin_jwt" = [])))]
pub async fn add(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(request): Json<AddParticipantRequest>,
) -> ApiResult<axum::Json<JoinResponse>> {
    let id = meeting_id(&id)?;
    let who = identity(&request.identity)?;
    let name = DisplayName::parse(request.name.as_deref().unwrap_or(who.as_str()))?;
    let (meeting, participant) = state
        .meetings
        .enter_trusted(&id, who, name, request.role.into())
        .await?;
    let caller = Caller::Participant {
        identity: participant.identity,
        instance: meeting.run.instance_id,
        epoch: participant.epoch,
    };
    let (meeting, participant) = state.meetings.join(&id, &caller).await?;
    Ok(axum::Json(
        join_response(&state, &meeting, &participant).await?,
    ))
}

/// Exchange your waiting-room (or access) token for a media access token once admitted. A host's
/// join starts the meeting.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/join", tag = "participants",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = JoinResponse)), security(("participant_token" = [])))]
pub async fn join(
    State(state): State<AppState>,
    OwnCall { id, caller, .. }: OwnCall,
) -> ApiResult<axum::Json<JoinResponse>> {
    let (meeting, participant) = state.meetings.join(&id, &caller).await?;
    Ok(axum::Json(
        join_response(&state, &meeting, &participant).await?,
    ))
}

/// Leave the meeting. You may join again in the same run without waiting.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/leave", tag = "participants",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = Ok)), security(("participant_token" = [])))]
pub async fn leave(
    State(state): State<AppState>,
    OwnCall { id, caller, .. }: OwnCall,
) -> ApiResult<axum::Json<Ok>> {
    state.meetings.leave(&id, &caller).await?;
    Ok(axum::Json(Ok { ok: true }))
}

/// Your own state in the meeting (for a waiting guest: whether you are admitted yet, and where
/// hosts admit one by one, your place in the queue).
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/me", tag = "participants",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = MeView)), security(("participant_token" = [])))]
pub async fn me(
    State(state): State<AppState>,
    OwnCall { id, caller, .. }: OwnCall,
) -> ApiResult<axum::Json<MeView>> {
    let Caller::Participant {
        identity,
        instance,
        epoch,
    } = caller
    else {
        return Err(ApiError::code(ErrorCode::Forbidden));
    };
    let (meeting, participant) = state
        .meetings
        .check_participant_token(&id, &identity, &instance, epoch)
        .await?;
    let position = state
        .meetings
        .waiting_position(&meeting, &participant)
        .await?;
    Ok(axum::Json(MeView {
        participant: ParticipantView::from(&participant),
        meeting: MeetingPublicView::from(&meeting),
        position,
    }))
}

/// Exchange a one-time join link (issued by the BigBlueButton surface's `/compat/bbb/join`) for
/// your way in: a waiting-room token, and a media access token when you are in at once (guests
/// wait for a host; then `join` with the waiting-room token). A link works once: a second
/// exchange, even a concurrent one, is refused with `join_link_used`; an expired link, or one
/// for an earlier run of the meeting, with `invalid_token`.
#[utoipa::path(post, path = "/v1/join-links/exchange", tag = "participants", request_body = JoinLinkRequest,
    responses((status = 200, body = JoinLinkResponse)))]
pub async fn exchange_join_link(
    State(state): State<AppState>,
    client: ClientAddr,
    Json(request): Json<JoinLinkRequest>,
) -> ApiResult<axum::Json<JoinLinkResponse>> {
    state.limits.check(client.0)?;
    if request.join_link.chars().count() > 8192 {
        return Err(convene_core::ValidationError::new(
            "join_link",
            "must be at most 8192 characters",
        )
        .into());
    }
    let (link, nonce) = convene_token::verify_join_link(
        &request.join_link,
        state.signer.secret(),
        state.meetings.now(),
    )?;
    let (meeting, participant) = state
        .meetings
        .redeem_join_link(
            &link.meeting,
            &link.identity,
            &link.instance,
            link.epoch,
            &nonce,
            link.expires_at,
        )
        .await?;
    let entered = enter_response(&state, &meeting, &participant)?;
    let join = match participant.state {
        convene_core::participant::ParticipantState::Joined => {
            Some(join_response(&state, &meeting, &participant).await?)
        }
        _ => None,
    };
    Ok(axum::Json(JoinLinkResponse {
        identity: entered.identity,
        role: entered.role,
        state: entered.state,
        token: entered.token,
        events_url: entered.events_url,
        meeting: entered.meeting,
        join,
    }))
}
