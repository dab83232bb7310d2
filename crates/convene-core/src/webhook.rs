//! Webhooks: every committed event is POSTed to the deployment-wide URLs and to the meeting's own
//! URL, from a durable outbox.
//!
//! The outbox is written by the store in the same transaction as the events it carries (one
//! delivery row per event and active endpoint), so a delivery is never lost between the commit and
//! the send, and a restart resumes where it stopped. Deliveries of one meeting to one endpoint (a
//! *lane*) go out in sequence order: the next waits until the previous one was delivered or given
//! up. Lanes are independent, so an endpoint that hangs or fails delays only its own lanes.
//!
//! This module holds the rules (URLs, statuses, the retry schedule) and the [`WebhookStore`] port;
//! the sender (HTTP, signing, timing) lives in the binary.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::error::ValidationError;
use crate::event::Event;
use crate::ids::{MeetingId, RoomName};
use crate::time::Timestamp;

/// A webhook target is a validated value, kept with the others; re-exported here.
pub use crate::ids::WebhookUrl;

/// Whose endpoint it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointScope {
    /// Configured for the deployment (`CONVENE_WEBHOOK_URLS`): receives every meeting's events.
    Deployment,
    /// A meeting's own `webhook_url`.
    Meeting,
}

impl EndpointScope {
    /// The scope of a stored endpoint id.
    pub fn of_endpoint(endpoint_id: &str) -> Self {
        if endpoint_id.starts_with(MEETING_PREFIX) {
            Self::Meeting
        } else {
            Self::Deployment
        }
    }
}

const DEPLOYMENT_PREFIX: &str = "deployment:";
const MEETING_PREFIX: &str = "meeting:";

/// The stored id of a deployment-wide endpoint: one per URL.
pub fn deployment_endpoint_id(url: &WebhookUrl) -> String {
    format!("{DEPLOYMENT_PREFIX}{}", url.as_str())
}

/// The stored id of a meeting's own endpoint: one per meeting, whatever its URL.
pub fn meeting_endpoint_id(meeting: &MeetingId) -> String {
    format!("{MEETING_PREFIX}{meeting}")
}

/// Where one delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its turn, or for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up after the last allowed attempt, or the endpoint was removed.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            _ => Err(ValidationError::new(
                "status",
                "must be pending, delivered or failed",
            )),
        }
    }
}

/// The deliveries of one meeting's events to one endpoint, sent in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lane {
    pub endpoint_id: String,
    pub meeting_id: MeetingId,
}

/// A delivery ready to be sent, with what its body is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueDelivery {
    pub lane: Lane,
    pub url: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub event: Event,
    pub room_name: RoomName,
}

/// One delivery as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub meeting_id: MeetingId,
    pub seq: u64,
    pub event_type: String,
    pub url: String,
    pub scope: EndpointScope,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<Timestamp>,
    /// The HTTP status of the last attempt, when the endpoint answered.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub meeting: Option<MeetingId>,
    pub status: Option<DeliveryStatus>,
    /// With `meeting`: only events after this sequence number (pagination).
    pub after_seq: Option<u64>,
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; try again at this time.
    RetryAt(Timestamp),
    /// Failed for the last allowed time.
    GaveUp,
}

/// One attempt, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub outcome: AttemptOutcome,
    pub at: Timestamp,
    /// HTTP status, when the endpoint answered.
    pub status: Option<u16>,
    /// Why it failed (at most [`MAX_ERROR_LEN`] bytes).
    pub error: Option<String>,
}

/// Longest error text kept per delivery.
pub const MAX_ERROR_LEN: usize = 500;

/// `text` cut to at most [`MAX_ERROR_LEN`] bytes, on a character boundary.
pub fn error_text(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// When to try again: exponential backoff from `first_delay`, doubling, capped at `max_delay`,
/// with up to 20% random spread so that many failing lanes do not retry in lockstep; given up
/// after `max_attempts` attempts in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts over about 17 minutes: 1 s, 2 s, 4 s ... 256 s between them.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The outcome of a failed attempt, the `attempts`-th in all (1 for the first), at `now`.
    /// `spread` in `[0, 1)` is the random part (passed in: the core draws no randomness).
    pub fn after_failure(&self, attempts: u32, now: Timestamp, spread: f64) -> AttemptOutcome {
        if attempts >= self.max_attempts {
            return AttemptOutcome::GaveUp;
        }
        let doublings = attempts.saturating_sub(1).min(32);
        let base = self
            .first_delay
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_delay);
        let spread = spread.clamp(0.0, 1.0) * 0.2;
        let delay = base + base.mul_f64(spread);
        AttemptOutcome::RetryAt(now.plus(delay.min(self.max_delay.mul_f64(1.2))))
    }
}

/// The outbox, as the webhook sender and the API use it. Rows are created by [`crate::ports::Store::commit`]
/// (and `create_meeting`), in the transaction that appends the events.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Makes `urls` the deployment-wide endpoints: new ones start receiving events committed from
    /// now on; removed ones stop, and their pending deliveries are marked failed.
    async fn set_deployment_webhooks(
        &self,
        urls: &[WebhookUrl],
        at: Timestamp,
    ) -> Result<(), StoreError>;
    /// Lanes whose first pending delivery is due at `now` and not leased, soonest first.
    async fn due_lanes(&self, now: Timestamp, limit: u32) -> Result<Vec<Lane>, StoreError>;
    /// Leases the lane's first pending deliveries (at most `max`, in order) until `lease_until`,
    /// if its head is due and not leased by another sender; else nothing.
    async fn claim_lane(
        &self,
        lane: &Lane,
        now: Timestamp,
        lease_until: Timestamp,
        max: u32,
    ) -> Result<Vec<DueDelivery>, StoreError>;
    /// Records an attempt at one delivery and releases its lease.
    async fn record_attempt(
        &self,
        lane: &Lane,
        seq: u64,
        attempt: &Attempt,
    ) -> Result<(), StoreError>;
    /// Releases what a claim leased (`claimed`, until `lease_until`) and did not attempt. Only
    /// that claim's leases: once its sender has recorded the deliveries before them, another
    /// sender may hold a lease on the lane's later ones, which must stay.
    async fn release_lane(
        &self,
        lane: &Lane,
        claimed: &[DueDelivery],
        lease_until: Timestamp,
    ) -> Result<(), StoreError>;
    /// Releases every lease (a single-node store at start: no other sender can hold one).
    async fn release_all_leases(&self) -> Result<(), StoreError>;
    /// Deliveries matching the filter, by meeting, sequence number and endpoint; at most `limit`.
    async fn webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;
    /// Deletes delivered and failed deliveries last updated before `before`; returns how many.
    async fn prune_webhook_deliveries(&self, before: Timestamp) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_absolute_http() {
        assert!(WebhookUrl::parse("https://hooks.example/convene").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/x").is_ok());
        let err = WebhookUrl::parse("ftp://x/").unwrap_err();
        assert_eq!(err.field, "webhook_url");
        assert!(WebhookUrl::parse("/relative").is_err());
        assert!(WebhookUrl::parse(&format!("https://x/{}", "a".repeat(2050))).is_err());
    }

    #[test]
    fn retries_back_off_exponentially_then_give_up() {
        let policy = RetryPolicy {
            max_attempts: 4,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3),
        };
        let now = Timestamp::from_millis(1_000_000);
        let at = |n, spread| match policy.after_failure(n, now, spread) {
            AttemptOutcome::RetryAt(t) => now.until(t).as_millis(),
            other => panic!("attempt {n}: {other:?}"),
        };
        assert_eq!(at(1, 0.0), 1000);
        assert_eq!(at(2, 0.0), 2000);
        assert_eq!(at(3, 0.0), 3000, "capped at max_delay");
        assert_eq!(at(1, 0.5), 1100, "spread adds up to 20%");
        assert_eq!(at(1, 7.0), 1200, "spread is clamped");
        assert_eq!(policy.after_failure(4, now, 0.0), AttemptOutcome::GaveUp);
        assert_eq!(policy.after_failure(40, now, 0.0), AttemptOutcome::GaveUp);
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        let now = Timestamp::from_millis(0);
        match policy.after_failure(1000, now, 0.99) {
            AttemptOutcome::RetryAt(t) => assert!(now.until(t) <= Duration::from_secs(360)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(400);
        let cut = error_text(&long);
        assert!(cut.len() <= MAX_ERROR_LEN);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(error_text("short"), "short");
    }

    #[test]
    fn endpoint_ids_name_their_scope() {
        let url = WebhookUrl::parse("https://hooks.example/meeting:1").unwrap();
        let meeting = MeetingId::parse("123456").unwrap();
        assert_eq!(
            EndpointScope::of_endpoint(&deployment_endpoint_id(&url)),
            EndpointScope::Deployment
        );
        assert_eq!(
            EndpointScope::of_endpoint(&meeting_endpoint_id(&meeting)),
            EndpointScope::Meeting
        );
        assert_eq!(meeting_endpoint_id(&meeting), "meeting:123456");
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()).unwrap(), s);
        }
        assert_eq!(DeliveryStatus::parse("done").unwrap_err().field, "status");
    }
}
