//! Admin calls on meetings: create, list (with search and head counts), get, update, start,
//! end; and the policy, which a host may change too.

use axum::extract::State;
use axum::http::StatusCode;
use convene_core::ErrorCode;
use convene_core::ids::{Credential, DisplayName, MeetingIdDigits, RoomName};
use convene_core::meeting::{Credentials, LogoutUrl, MeetingSettings, Metadata, Schedule};
use convene_core::service::NewMeeting;
use convene_core::webhook::WebhookUrl;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{HostCall, host_caller, meeting_id};
use crate::auth::{Admin, AnyCaller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use crate::wire::{
    CreateMeetingRequest, CredentialsInput, MeetingList, MeetingPublicView, MeetingView,
    PolicyRequest, ScheduleWire, UpdateMeetingRequest, check_http_url, parse_rfc3339,
};

fn credential(field: &str, raw: Option<String>) -> ApiResult<Option<Credential>> {
    raw.map(|c| {
        Credential::parse(&c).map_err(|e| {
            ApiError::from(convene_core::ValidationError::new(
                format!("credentials.{field}"),
                e.reason,
            ))
        })
    })
    .transpose()
}

fn schedule(wire: ScheduleWire) -> ApiResult<Schedule> {
    let starts_at = parse_rfc3339("schedule.starts_at", &wire.starts_at)?;
    let ends_at = wire
        .ends_at
        .map(|e| parse_rfc3339("schedule.ends_at", &e))
        .transpose()?;
    Schedule::new(starts_at, ends_at)
        .map_err(|e| ApiError::new(ErrorCode::InvalidCombination, e.to_string()))
}

/// Largest capacity a meeting may have (the schema's `maximum`).
const MAX_CAPACITY: u32 = 1_000_000;

fn capacity(value: Option<u32>) -> ApiResult<Option<u32>> {
    if value.is_some_and(|c| !(1..=MAX_CAPACITY).contains(&c)) {
        return Err(convene_core::ValidationError::new(
            "capacity",
            format!("must be 1 to {MAX_CAPACITY} (omit it for no limit)"),
        )
        .into());
    }
    Ok(value)
}

/// A `logout_url` as the schema states it ([`check_http_url`]), then as the core takes it.
fn logout_url(raw: &str) -> ApiResult<LogoutUrl> {
    check_http_url("logout_url", raw)?;
    Ok(LogoutUrl::parse(raw)?)
}

/// A `webhook_url` as the schema states it ([`check_http_url`]), then as the core takes it.
fn webhook_url(raw: &str) -> ApiResult<WebhookUrl> {
    check_http_url("webhook_url", raw)?;
    Ok(WebhookUrl::parse(raw)?)
}

/// Create a meeting.
#[utoipa::path(post, path = "/v1/meetings", tag = "meetings", request_body = CreateMeetingRequest,
    responses((status = 201, description = "Created", body = MeetingView)),
    security(("api_key" = []), ("admin_jwt" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Json(request): Json<CreateMeetingRequest>,
) -> ApiResult<(StatusCode, axum::Json<MeetingView>)> {
    let settings = MeetingSettings {
        waiting_room_chat: request.waiting_room_chat.unwrap_or(false),
        auto_record: request.auto_record.unwrap_or(false),
        name: DisplayName::parse(&request.name)?,
        mode: request
            .mode
            .map(Into::into)
            .unwrap_or(convene_core::meeting::Mode::Meeting),
        policy: request
            .policy
            .map(Into::into)
            .unwrap_or(convene_core::meeting::WaitingPolicy::WaitForHost),
        capacity: capacity(request.capacity)?,
        quality: request.quality.map(Into::into).unwrap_or_default(),
        logout_url: request.logout_url.as_deref().map(logout_url).transpose()?,
        metadata: Metadata::parse(serde_json::Value::Object(
            request.metadata.unwrap_or_default(),
        ))?,
        schedule: request.schedule.map(schedule).transpose()?,
        webhook_url: request
            .webhook_url
            .as_deref()
            .map(webhook_url)
            .transpose()?,
    };
    let credentials = request.credentials.unwrap_or_default();
    let new = NewMeeting {
        id: None,
        digits: request.n_digits.map(MeetingIdDigits::new).transpose()?,
        room_name: request
            .room_name
            .as_deref()
            .map(RoomName::parse)
            .transpose()?,
        settings,
        host_credential: credential("host", credentials.host)?,
        participant_credential: credential("participant", credentials.participant)?,
        viewer_credential: credential("viewer", credentials.viewer)?,
    };
    let meeting = state.meetings.create_meeting(new).await?;
    Ok((StatusCode::CREATED, axum::Json(MeetingView::from(&meeting))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Return meetings after this meeting id.
    pub after: Option<String>,
    /// Only meetings whose id or name contains this text (case-insensitive).
    #[param(max_length = 200)]
    pub q: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// List meetings, ordered by id, each with how many people are in it now (`people`).
#[utoipa::path(get, path = "/v1/meetings", tag = "meetings", params(ListParams),
    responses((status = 200, body = MeetingList)), security(("api_key" = []), ("admin_jwt" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<MeetingList>> {
    let after = params.after.as_deref().map(meeting_id).transpose()?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(convene_core::ValidationError::new("limit", "must be 1 to 1000").into());
    }
    let search = params.q.as_deref().map(str::trim);
    if search.is_some_and(|q| q.len() > 200) {
        return Err(convene_core::ValidationError::new("q", "must be at most 200 bytes").into());
    }
    let meetings = state
        .meetings
        .meeting_summaries(search, after.as_ref(), limit)
        .await?;
    let next = (meetings.len() == limit as usize)
        .then(|| meetings.last().map(|(m, _)| m.id.to_string()))
        .flatten();
    Ok(axum::Json(MeetingList {
        meetings: meetings
            .iter()
            .map(|(meeting, people)| MeetingView {
                people: Some((*people).into()),
                ..MeetingView::from(meeting)
            })
            .collect(),
        next,
    }))
}

/// Get a meeting, with its credentials.
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}", tag = "meetings",
    params(("meeting_id" = String, Path, description = "Numeric meeting id")),
    responses((status = 200, body = MeetingView)), security(("api_key" = []), ("admin_jwt" = [])))]
pub async fn get(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<MeetingView>> {
    let meeting = state.meetings.meeting(&meeting_id(&id)?).await?;
    Ok(axum::Json(MeetingView::from(&meeting)))
}

/// Change a meeting's settings. Opening the policy of a live meeting admits everyone waiting.
#[utoipa::path(patch, path = "/v1/meetings/{meeting_id}", tag = "meetings", request_body = UpdateMeetingRequest,
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = MeetingView)), security(("api_key" = []), ("admin_jwt" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    Json(request): Json<UpdateMeetingRequest>,
) -> ApiResult<axum::Json<MeetingView>> {
    let id = meeting_id(&id)?;
    let current = state.meetings.meeting(&id).await?;
    let mut settings = current.settings.clone();
    if let Some(name) = request.name {
        settings.name = DisplayName::parse(&name)?;
    }
    if let Some(mode) = request.mode {
        settings.mode = mode.into();
    }
    if let Some(policy) = request.policy {
        settings.policy = policy.into();
    }
    if let Some(value) = request.capacity {
        settings.capacity = capacity(value)?;
    }
    if let Some(quality) = request.quality {
        settings.quality = quality.into();
    }
    if let Some(url) = request.logout_url {
        settings.logout_url = url.as_deref().map(logout_url).transpose()?;
    }
    if let Some(url) = request.webhook_url {
        settings.webhook_url = url.as_deref().map(webhook_url).transpose()?;
    }
    if let Some(metadata) = request.metadata {
        settings.metadata = Metadata::parse(serde_json::Value::Object(metadata))?;
    }
    if let Some(value) = request.schedule {
        settings.schedule = value.map(schedule).transpose()?;
    }
    if let Some(on) = request.waiting_room_chat {
        settings.waiting_room_chat = on;
    }
    if let Some(on) = request.auto_record {
        settings.auto_record = on;
    }
    let credentials = match request.credentials {
        Some(CredentialsInput {
            host,
            participant,
            viewer,
        }) => Some(Credentials {
            host: credential("host", host)?.unwrap_or(current.credentials.host.clone()),
            participant: credential("participant", participant)?
                .unwrap_or(current.credentials.participant.clone()),
            viewer: credential("viewer", viewer)?.unwrap_or(current.credentials.viewer.clone()),
        }),
        None => None,
    };
    let meeting = state
        .meetings
        .update_meeting(&id, settings, credentials)
        .await?;
    Ok(axum::Json(MeetingView::from(&meeting)))
}

/// Start the meeting (a new run if it had ended). Admins, or a joined host's access token.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/start", tag = "meetings",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = MeetingView)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn start(
    State(state): State<AppState>,
    HostCall { id, caller, .. }: HostCall,
) -> ApiResult<axum::Json<MeetingView>> {
    let meeting = state.meetings.start_meeting(&id, &caller).await?;
    Ok(axum::Json(MeetingView::from(&meeting)))
}

/// End the meeting: everyone is disconnected and the waiting room is told.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/end", tag = "meetings",
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = MeetingView)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn end(
    State(state): State<AppState>,
    HostCall { id, caller, .. }: HostCall,
) -> ApiResult<axum::Json<MeetingView>> {
    let meeting = state.meetings.end_meeting(&id, &caller).await?;
    Ok(axum::Json(MeetingView::from(&meeting)))
}

/// Change who gets in (`deny` locks the meeting; `open` or `wait_for_host` on a live meeting
/// lets everyone waiting in). Admins, or a host's own token.
#[utoipa::path(post, path = "/v1/meetings/{meeting_id}/policy", tag = "moderation", request_body = PolicyRequest,
    params(("meeting_id" = String, Path)),
    responses((status = 200, body = MeetingPublicView)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn policy(
    State(state): State<AppState>,
    AnyCaller(principal): AnyCaller,
    Path(id): Path<String>,
    Json(request): Json<PolicyRequest>,
) -> ApiResult<axum::Json<MeetingPublicView>> {
    let id = meeting_id(&id)?;
    let meeting = state
        .meetings
        .set_policy(&id, &host_caller(&principal, &id)?, request.policy.into())
        .await?;
    Ok(axum::Json(MeetingPublicView::from(&meeting)))
}
