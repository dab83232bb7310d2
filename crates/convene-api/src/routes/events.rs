//! Reading a meeting's event log, filtered to what the caller may see.

use axum::extract::State;
use convene_core::event::ViewerClass;
use convene_core::ids::{Identity, MeetingId};
use convene_core::participant::Role;
use convene_core::service::Caller;
use serde::Deserialize;
use utoipa::IntoParams;

use super::meeting_id;
use crate::auth::{AnyCaller, Principal};
use crate::error::ApiResult;
use crate::extract::{Path, Query};
use crate::state::AppState;
use crate::wire::{EventPage, EventView};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Only events with a sequence number above this (default 0: from the start).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// What a caller may see of a meeting's events.
#[derive(Clone, Debug)]
pub struct Viewer {
    pub class: ViewerClass,
    pub identity: Option<Identity>,
}

/// Works out the viewer class from the caller's current state (not from the token: a promotion or
/// a removal takes effect at once).
pub async fn viewer(state: &AppState, principal: &Principal, id: &MeetingId) -> ApiResult<Viewer> {
    match principal.caller_for(id)? {
        Caller::Admin => {
            state.meetings.meeting(id).await?;
            Ok(Viewer { class: ViewerClass::Host, identity: None })
        }
        Caller::Participant { identity, instance, epoch } => {
            let (_, p) = state.meetings.check_participant_token(id, &identity, &instance, epoch).await?;
            let class = if p.role == Role::Host && p.state.is_present() {
                ViewerClass::Host
            } else if p.state.is_member() {
                ViewerClass::Member
            } else {
                ViewerClass::Waiting
            };
            Ok(Viewer { class, identity: Some(identity) })
        }
    }
}

/// Read the meeting's events after a sequence number, filtered to what you may see: a waiting
/// guest sees the meeting's status and its own admission; members the stage and chat; hosts all.
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/events", tag = "events",
    params(("meeting_id" = String, Path), EventParams),
    responses((status = 200, body = EventPage)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn list(State(state): State<AppState>, AnyCaller(principal): AnyCaller, Path(id): Path<String>, Query(params): Query<EventParams>) -> ApiResult<axum::Json<EventPage>> {
    let id = meeting_id(&id)?;
    let viewer = viewer(&state, &principal, &id).await?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(convene_core::ValidationError::new("limit", "must be 1 to 1000").into());
    }
    let after = u64::try_from(params.after.unwrap_or(0))
        .map_err(|_| convene_core::ValidationError::new("after", "must not be negative"))?;
    let events = state.meetings.events_after(&id, after, limit).await?;
    let next_after = events.last().map(|e| e.seq).unwrap_or(after);
    let last_seq = state.meetings.meeting(&id).await?.last_seq;
    let visible = events
        .iter()
        .filter(|e| e.audience.admits(viewer.class, viewer.identity.as_ref()))
        .map(EventView::from)
        .collect();
    Ok(axum::Json(EventPage { events: visible, next_after, last_seq }))
}
