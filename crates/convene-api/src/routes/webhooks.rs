//! The webhook outbox, as admins see it: every delivery with its status, attempts and last error.

use axum::extract::State;
use convene_core::webhook::{DeliveryFilter, DeliveryStatus};
use serde::Deserialize;
use utoipa::IntoParams;

use super::meeting_id;
use crate::auth::Admin;
use crate::error::ApiResult;
use crate::extract::Query;
use crate::state::AppState;
use crate::wire::{WebhookDeliveryList, WebhookDeliveryView};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    /// Only this meeting's deliveries.
    pub meeting_id: Option<String>,
    /// `pending`, `delivered` or `failed`.
    #[param(pattern = "^(pending|delivered|failed)$")]
    pub status: Option<String>,
    /// Only deliveries of events after this sequence number; with `meeting_id`, the previous
    /// page's `next_after`.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// List webhook deliveries, by meeting, event sequence number and endpoint.
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks", params(DeliveryParams),
    responses((status = 200, body = WebhookDeliveryList)), security(("api_key" = []), ("admin_jwt" = [])))]
pub async fn deliveries(
    State(state): State<AppState>,
    _admin: Admin,
    Query(params): Query<DeliveryParams>,
) -> ApiResult<axum::Json<WebhookDeliveryList>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(convene_core::ValidationError::new("limit", "must be 1 to 1000").into());
    }
    let meeting = params.meeting_id.as_deref().map(meeting_id).transpose()?;
    let after_seq = params
        .after
        .map(|after| {
            u64::try_from(after)
                .map_err(|_| convene_core::ValidationError::new("after", "must be at least 0"))
        })
        .transpose()?;
    let status = params
        .status
        .as_deref()
        .map(DeliveryStatus::parse)
        .transpose()?;
    let filter = DeliveryFilter {
        meeting,
        status,
        after_seq,
    };
    let found = state.meetings.webhook_deliveries(&filter, limit).await?;
    // A full page may end inside one event's deliveries (one per endpoint): those are left for
    // the next page, which resumes after the last event shown whole.
    let (shown, next_after) = match (
        filter.meeting.is_some() && found.len() == limit as usize,
        found.last(),
    ) {
        (true, Some(last)) => {
            let whole: Vec<_> = found.iter().filter(|d| d.seq < last.seq).collect();
            match whole.last() {
                Some(before) => {
                    let next = before.seq;
                    (whole, Some(next))
                }
                // One event filled the page (limit below its endpoint count).
                None => (found.iter().collect(), Some(last.seq)),
            }
        }
        _ => (found.iter().collect(), None),
    };
    Ok(axum::Json(WebhookDeliveryList {
        deliveries: shown.into_iter().map(WebhookDeliveryView::from).collect(),
        next_after,
    }))
}
