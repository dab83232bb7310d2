//! Reading a meeting's event log, filtered to what the caller may see: a JSON page, or (with
//! `Accept: text/event-stream` or a WebSocket upgrade) the live stream of [`super::stream`].

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use convene_core::event::ViewerClass;
use convene_core::ids::{Identity, MeetingId};
use convene_core::service::Caller;
use serde::Deserialize;
use utoipa::IntoParams;

use super::meeting_id;
use super::stream;
use crate::auth::{Principal, authenticate_request};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::realtime::direct::{Conn, Peer};
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
    /// The caller's token, for clients that cannot set `Authorization` (EventSource, WebSocket);
    /// the header wins when both are given.
    #[param(max_length = 4096)]
    pub access_token: Option<String>,
}

/// How the events are asked for.
pub enum Delivery {
    Page,
    ServerSentEvents,
    /// With the connection, when the server's listener shares it ([`crate::realtime::direct::Peer`]).
    WebSocket(WebSocketUpgrade, Option<Arc<Conn>>),
}

impl FromRequestParts<AppState> for Delivery {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let upgrade = parts
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if upgrade.eq_ignore_ascii_case("websocket") {
            let conn = parts
                .extensions
                .get::<ConnectInfo<Peer>>()
                .map(|ConnectInfo(peer)| peer.conn.clone());
            return WebSocketUpgrade::from_request_parts(parts, state)
                .await
                .map(|upgrade| Self::WebSocket(upgrade, conn))
                .map_err(|rejection| {
                    ApiError::new(
                        convene_core::ErrorCode::InvalidRequest,
                        rejection.body_text(),
                    )
                });
        }
        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(if accept.contains("text/event-stream") {
            Self::ServerSentEvents
        } else {
            Self::Page
        })
    }
}

/// `Last-Event-ID` (SSE reconnection) as a sequence number.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    parsed.map(Some).ok_or_else(|| {
        convene_core::ValidationError::new("Last-Event-ID", "must be a sequence number").into()
    })
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
            Ok(Viewer {
                class: ViewerClass::Host,
                identity: None,
            })
        }
        Caller::Participant {
            identity,
            instance,
            epoch,
        } => {
            let (_, p) = state
                .meetings
                .check_participant_token(id, &identity, &instance, epoch)
                .await?;
            Ok(Viewer {
                class: convene_core::Standing::of(&p).class(),
                identity: Some(identity),
            })
        }
    }
}

/// Read the meeting's events after a sequence number, filtered to what you may see: a waiting
/// guest sees the meeting's status and its own admission; members the stage and chat; hosts all.
///
/// Live: with `Accept: text/event-stream` the answer is a Server-Sent Events stream (`id` = the
/// event's `seq`, `event` = its type, `data` = the event as here; `Last-Event-ID` works like
/// `after`); upgraded to a WebSocket it is a stream of JSON text frames. Both start with a
/// `snapshot` of what you may see, or with the stored events after `after`, then go on live with
/// no gap and no duplicate.
#[utoipa::path(get, path = "/v1/meetings/{meeting_id}/events", tag = "events",
    params(("meeting_id" = String, Path), EventParams),
    responses((status = 200, body = EventPage)), security(("api_key" = []), ("admin_jwt" = []), ("participant_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    delivery: Delivery,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<EventParams>,
) -> ApiResult<Response> {
    let id = meeting_id(&id)?;
    if params
        .access_token
        .as_ref()
        .is_some_and(|t| t.chars().count() > 4096)
    {
        return Err(convene_core::ValidationError::new(
            "access_token",
            "must be at most 4096 characters",
        )
        .into());
    }
    let kinds = [
        convene_token::TokenKind::Access,
        convene_token::TokenKind::Waiting,
    ];
    let principal =
        authenticate_request(&state, &headers, params.access_token.as_deref(), &kinds).await?;
    let after = params
        .after
        .map(|after| {
            u64::try_from(after)
                .map_err(|_| convene_core::ValidationError::new("after", "must not be negative"))
        })
        .transpose()?;
    match delivery {
        Delivery::Page => page(state, principal, id, after.unwrap_or(0), params.limit)
            .await
            .map(IntoResponse::into_response),
        Delivery::ServerSentEvents => {
            let after = last_event_id(&headers)?.or(after);
            let opening = stream::authorize(&state, &principal, &id).await?;
            stream::sse(state, opening, after).await
        }
        Delivery::WebSocket(upgrade, conn) => {
            let opening = stream::authorize(&state, &principal, &id).await?;
            Ok(stream::websocket(upgrade, state, opening, after, conn))
        }
    }
}

async fn page(
    state: AppState,
    principal: Principal,
    id: MeetingId,
    after: u64,
    limit: Option<u32>,
) -> ApiResult<axum::Json<EventPage>> {
    let viewer = viewer(&state, &principal, &id).await?;
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(convene_core::ValidationError::new("limit", "must be 1 to 1000").into());
    }
    let events = state.meetings.events_after(&id, after, limit).await?;
    let next_after = events.last().map(|e| e.seq).unwrap_or(after);
    let last_seq = state.meetings.meeting(&id).await?.last_seq;
    let visible = events
        .iter()
        .filter(|e| e.visible_to(viewer.class, viewer.identity.as_ref()))
        .map(
            |e| match e.seen_by(viewer.class, viewer.identity.as_ref()) {
                Some(own) => EventView::from(&own),
                None => EventView::from(e),
            },
        )
        .collect();
    Ok(axum::Json(EventPage {
        events: visible,
        next_after,
        last_seq,
    }))
}
