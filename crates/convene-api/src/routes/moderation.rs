//! The waiting room, the stage, moderation and chat. Host calls accept an API key or a host's
//! own access token, never a waiting-room token ([`super::host_caller`]); self-service calls
//! (hand, invitation answer, chat) the participant's token.

use std::time::Duration;

use axum::extract::State;
use convene_core::ErrorCode;
use convene_core::event::TrackSelector;
use convene_core::ids::ChatText;
use convene_core::participant::ParticipantState;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{HostCall, HostCallOn, OwnCall, host_caller, identity, meeting_id, participant_caller};
use crate::auth::AnyCaller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use crate::wire::{
    BanRequest, ChatRequest, ChatResponse, HandRequest, MuteRequest, Ok, ParticipantList,
    ParticipantView, RoleRequest, WireState,
};

type Target = Path<(String, String)>;

fn ok() -> axum::Json<Ok> {
    axum::Json(Ok { ok: true })
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ParticipantFilter {
    /// Only participants in this state (e.g. `waiting`).
    pub state: Option<WireState>,
}

/// List participants (hosts and admins): the waiting list, the roster, raised hands.
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/participants", tag = "participants",
    params(("meeting_id" = String, Path), ParticipantFilter),
    responses((status = 200, body = ParticipantList)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path(id): Path<String>,
    Query(filter): Query<ParticipantFilter>,
) -> ApiResult<axum::Json<ParticipantList>> {
    let id = meeting_id(&id)?;
    require_host(&state, &principal, &id).await?;
    let states: Option<Vec<ParticipantState>> = filter.state.map(|s| vec![s.into()]);
    let participants = state.meetings.participants(&id, states.as_deref()).await?;
    Ok(axum::Json(ParticipantList {
        participants: participants.iter().map(ParticipantView::from).collect(),
    }))
}

/// Get one participant (hosts and admins).
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/participants/{identity}", tag = "participants",
    params(("meeting_id" = String, Path), ("identity" = String, Path)),
    responses((status = 200, body = ParticipantView)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path((id, who)): Target,
) -> ApiResult<axum::Json<ParticipantView>> {
    let id = meeting_id(&id)?;
    require_host(&state, &principal, &id).await?;
    let participant = state.meetings.participant(&id, &identity(&who)?).await?;
    Ok(axum::Json(ParticipantView::from(&participant)))
}

/// Hosts (and admins) only.
pub(crate) async fn require_host(
    state: &AppState,
    principal: &crate::auth::Principal,
    id: &convene_core::ids::MeetingId,
) -> ApiResult<()> {
    match host_caller(principal, id)? {
        convene_core::service::Caller::Admin => Ok(()),
        convene_core::service::Caller::Participant {
            identity,
            instance,
            epoch,
        } => {
            let (_, p) = state
                .meetings
                .check_participant_token(id, &identity, &instance, epoch)
                .await?;
            let is_host = convene_core::ops::Actor::Participant(p).is_host(state.meetings.now());
            if is_host {
                Ok(())
            } else {
                Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only a host may do this",
                ))
            }
        }
    }
}

macro_rules! target_action {
    ($(#[$doc:meta])* $name:ident, $path:literal, $method:ident) => {
        $(#[$doc])*
        #[utoipa::path(post, path = $path, tag = "moderation",
            params(("meeting_id" = String, Path), ("identity" = String, Path)),
            responses((status = 200, body = Ok)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
        pub async fn $name(State(state): State<AppState>, HostCallOn { id, caller, target }: HostCallOn) -> ApiResult<axum::Json<Ok>> {
            state.meetings.$method(&id, &caller, &target).await?;
            Ok(ok())
        }
    };
}

target_action!(
    /// Admit one waiting participant.
    admit, "/v1/meetings/{meeting_id}/participants/{identity}/admit", admit);
target_action!(
    /// Turn a waiting participant away; their tokens stop working.
    deny, "/v1/meetings/{meeting_id}/participants/{identity}/deny", deny);
target_action!(
    /// Send an admitted participant back to the waiting room (and out of the media room).
    send_back, "/v1/meetings/{meeting_id}/participants/{identity}/send-back", send_back);
target_action!(
    /// Invite a viewer to speak.
    invite, "/v1/meetings/{meeting_id}/participants/{identity}/invite", invite);
target_action!(
    /// Remove a participant: disconnected now, tokens revoked. They may enter again.
    remove, "/v1/meetings/{meeting_id}/participants/{identity}/remove", remove);
target_action!(
    /// Lift a ban.
    unban, "/v1/meetings/{meeting_id}/participants/{identity}/unban", unban);

/// Admit everyone waiting.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/admit-all", tag = "moderation",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = Ok)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn admit_all(
    State(state): State<AppState>,
    HostCall { id, caller, .. }: HostCall,
) -> ApiResult<axum::Json<Ok>> {
    state.meetings.admit_all(&id, &caller).await?;
    Ok(ok())
}

/// Ban a participant, for `duration_seconds` or until lifted. Survives reconnects and restarts.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/participants/{identity}/ban", tag = "moderation", request_body = BanRequest,
    params(("meeting_id" = String, Path), ("identity" = String, Path)),
    responses((status = 200, body = Ok)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn ban(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path((id, who)): Target,
    Json(request): Json<BanRequest>,
) -> ApiResult<axum::Json<Ok>> {
    let id = meeting_id(&id)?;
    let duration = match request.duration_seconds {
        Some(0) | Some(315_360_001..) => {
            return Err(convene_core::ValidationError::new(
                "duration_seconds",
                "must be 1 to 315360000 (ten years)",
            )
            .into());
        }
        other => other.map(Duration::from_secs),
    };
    state
        .meetings
        .ban(
            &id,
            &host_caller(&principal, &id)?,
            &identity(&who)?,
            duration,
        )
        .await?;
    Ok(ok())
}

/// Set a participant's role (promote a viewer to speaker, demote a speaker, make a co-host).
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/participants/{identity}/role", tag = "moderation", request_body = RoleRequest,
    params(("meeting_id" = String, Path), ("identity" = String, Path)),
    responses((status = 200, body = ParticipantView)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn role(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path((id, who)): Target,
    Json(request): Json<RoleRequest>,
) -> ApiResult<axum::Json<ParticipantView>> {
    let id = meeting_id(&id)?;
    let participant = state
        .meetings
        .set_role(
            &id,
            &host_caller(&principal, &id)?,
            &identity(&who)?,
            request.role.into(),
        )
        .await?;
    Ok(axum::Json(ParticipantView::from(&participant)))
}

/// Mute one of a participant's tracks (`audio`, `video` or a track sid).
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/participants/{identity}/mute", tag = "moderation", request_body = MuteRequest,
    params(("meeting_id" = String, Path), ("identity" = String, Path)),
    responses((status = 200, body = Ok)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn mute(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path((id, who)): Target,
    Json(request): Json<MuteRequest>,
) -> ApiResult<axum::Json<Ok>> {
    let id = meeting_id(&id)?;
    let track = match request.track.as_str() {
        "audio" => TrackSelector::Audio,
        "video" => TrackSelector::Video,
        sid if sid.starts_with("TR_")
            && sid.len() <= 64
            && sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            TrackSelector::Track(sid.to_owned())
        }
        _ => {
            return Err(convene_core::ValidationError::new(
                "track",
                "must be audio, video or a track sid (TR_...)",
            )
            .into());
        }
    };
    state
        .meetings
        .mute(
            &id,
            &host_caller(&principal, &id)?,
            &identity(&who)?,
            track,
            request.muted.unwrap_or(true),
        )
        .await?;
    Ok(ok())
}

/// Raise or lower your hand.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/hand", tag = "stage", request_body = HandRequest,
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = Ok)), security(("participant_token" = [])))]
pub async fn hand(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path(id): Path<String>,
    Json(request): Json<HandRequest>,
) -> ApiResult<axum::Json<Ok>> {
    let id = meeting_id(&id)?;
    let caller = participant_caller(&principal, &id)?;
    state
        .meetings
        .set_hand(&id, &caller, None, request.raised)
        .await?;
    Ok(ok())
}

async fn answer(state: AppState, call: OwnCall, accept: bool) -> ApiResult<axum::Json<Ok>> {
    let OwnCall { id, caller, .. } = call;
    state
        .meetings
        .answer_invite(&id, &caller, None, accept)
        .await?;
    Ok(ok())
}

/// Accept an invitation to speak: you become a speaker, live.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/invitation/accept", tag = "stage",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = Ok)), security(("participant_token" = [])))]
pub async fn accept(State(state): State<AppState>, call: OwnCall) -> ApiResult<axum::Json<Ok>> {
    answer(state, call, true).await
}

/// Decline an invitation to speak.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/invitation/decline", tag = "stage",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = Ok)), security(("participant_token" = [])))]
pub async fn decline(State(state): State<AppState>, call: OwnCall) -> ApiResult<axum::Json<Ok>> {
    answer(state, call, false).await
}

/// Send a chat message to everyone, or to one person with `to`.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/chat", tag = "stage", request_body = ChatRequest,
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = ChatResponse)), security(("participant_token" = [])))]
pub async fn chat(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path(id): Path<String>,
    Json(request): Json<ChatRequest>,
) -> ApiResult<axum::Json<ChatResponse>> {
    let id = meeting_id(&id)?;
    let caller = principal.caller_for(&id)?;
    if matches!(caller, convene_core::service::Caller::Admin) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "chat needs a participant's own token",
        ));
    }
    let text = ChatText::parse(&request.text)?;
    let to = request.to.as_deref().map(identity).transpose()?;
    let seq = state.meetings.chat(&id, &caller, text, to.as_ref()).await?;
    Ok(axum::Json(ChatResponse { seq }))
}
