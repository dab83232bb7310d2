//! The webhook sender: takes due deliveries from the store's outbox and POSTs them, signed as
//! LiveKit signs its webhooks, so LiveKit's `WebhookReceiver`s verify them unchanged.
//!
//! - **Durable**: deliveries are rows written with the events (see `convene_core::webhook`);
//!   this task only reads due lanes, leases them, sends and records. A restart loses nothing;
//!   on SQLite (one node by construction) the leases of a previous process are released at start.
//! - **Ordered per lane** (one meeting to one endpoint): a lane is sent by one task at a time, in
//!   sequence order, and stops at the first failure until that delivery is retried or given up.
//! - **Isolated**: each lane runs in its own task with a request timeout, at most
//!   [`LANES_PER_ENDPOINT`] lanes per endpoint and [`MAX_LANES`] in all, so an endpoint that
//!   hangs or fails holds only its own lanes; the API never waits on webhooks.
//! - **Finished at shutdown**: the sender and its lanes run on the server's task tracker; at
//!   shutdown no new lane is claimed, a lane stops after the delivery in flight, and that
//!   delivery's outcome is recorded before the server's `wait` returns.
//!
//! Body: a LiveKit `WebhookEvent` in JSON (`event`, `id`, `createdAt`, `room`, `participant`,
//! `track` where they apply), with convene's own event under `convene` (LiveKit's receivers
//! ignore unknown fields). Media events use LiveKit's names (`participant_joined`,
//! `track_published`, `room_started`...); the others keep convene's type (`participant.admitted`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use convene_api::wire::EventView;
use convene_core::event::EventKind;
use convene_core::ports::{EventSink, Store};
use convene_core::time::Clock;
use convene_core::webhook::{Attempt, AttemptOutcome, DueDelivery, Lane, RetryPolicy, error_text};
use convene_token::Signer;
use rand::Rng;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::SystemClock;
use crate::config::WebhookConfig;

/// Lanes sent at once, in all.
pub const MAX_LANES: usize = 64;
/// Lanes sent at once to one endpoint.
pub const LANES_PER_ENDPOINT: usize = 4;
/// Deliveries leased per claim (sent one after the other).
const BATCH: u32 = 16;
/// How often the outbox is looked at when nothing wakes the sender (retries coming due) while
/// it holds work; see [`next_poll`] for when it is empty.
const POLL: Duration = Duration::from_millis(250);
/// The shortest time between two looks at the outbox when commits wake the sender: under a storm
/// of commits (hundreds a second) it reads the outbox at most this often, not once per commit.
const MIN_LOOK_GAP: Duration = Duration::from_millis(10);
/// The longest wait between two looks at an empty outbox (commits wake the sender at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Finished deliveries are kept this long for the API, then pruned.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The wait before the next look at the outbox: [`POLL`] while there is work, doubling while it
/// stays empty up to [`IDLE_POLL`], or the first retry delay if that is shorter, so a retry goes
/// out at most that long after it comes due. An idle server then reads the outbox once a
/// second, not four times.
fn next_poll(previous: Duration, busy: bool, first_retry: Duration) -> Duration {
    if busy {
        return POLL;
    }
    let ceiling = IDLE_POLL.min(first_retry).max(POLL);
    previous.saturating_mul(2).clamp(POLL, ceiling)
}

/// The event sink that wakes the sender when events are committed.
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl EventSink for Wake {
    fn publish(&self, _events: &[convene_core::event::Event]) {
        self.0.notify_one();
    }
}

/// Sends to several sinks (the realtime hub and the webhook sender).
pub struct Sinks(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Sinks {
    fn publish(&self, events: &[convene_core::event::Event]) {
        for sink in &self.0 {
            sink.publish(events);
        }
    }
}

/// Starts the sender on `tasks`. `single_node`: no other process shares this outbox (SQLite), so
/// leases left by a previous process are released now instead of waiting for them to run out.
/// `metrics`: where the attempts are counted.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    store: Arc<dyn Store>,
    signer: Signer,
    config: WebhookConfig,
    wake: Wake,
    single_node: bool,
    metrics: WebhookMetrics,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    store
        .set_deployment_webhooks(&config.urls, now)
        .await
        .map_err(|e| anyhow::anyhow!("cannot record CONVENE_WEBHOOK_URLS: {e}"))?;
    if single_node {
        store
            .release_all_leases()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the webhook outbox: {e}"))?;
    }
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("convene/", env!("CARGO_PKG_VERSION"), " webhooks"))
        .build()?;
    let sender = Arc::new(Sender {
        store,
        signer,
        client,
        retry: config.retry,
        timeout: config.timeout,
        metrics,
    });
    tasks.spawn(sender.run(wake, shutdown, tasks.clone()));
    Ok(())
}

struct Sender {
    store: Arc<dyn Store>,
    signer: Signer,
    client: reqwest::Client,
    retry: RetryPolicy,
    timeout: Duration,
    metrics: WebhookMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct OutcomeLabel {
    /// `delivered`, `failed` (to be tried again) or `gave_up` (failed for the last time).
    outcome: &'static str,
}

/// `convene_webhook_attempts_total{outcome}`: every POST the sender made, by outcome (failures
/// are the attempts not `delivered`). The outbox depth is a gauge read from the store at scrape
/// time (`crate::metrics`).
#[derive(Clone, Debug, Default)]
pub struct WebhookMetrics {
    attempts: prometheus_client::metrics::family::Family<
        OutcomeLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl WebhookMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "convene_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, failed, gave_up)",
            metrics.attempts.clone(),
        );
        metrics
    }

    fn count(&self, outcome: &AttemptOutcome) {
        let outcome = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::RetryAt(_) => "failed",
            AttemptOutcome::GaveUp => "gave_up",
        };
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

impl Sender {
    async fn run(self: Arc<Self>, wake: Wake, shutdown: CancellationToken, tasks: TaskTracker) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Lane>();
        let mut running: HashSet<Lane> = HashSet::new();
        let mut per_endpoint: HashMap<String, usize> = HashMap::new();
        let mut next_prune = tokio::time::Instant::now();
        let mut poll = POLL;
        loop {
            let looked = tokio::time::Instant::now();
            let now = SystemClock.now();
            let mut found = false;
            match self.store.due_lanes(now, (MAX_LANES * 2) as u32).await {
                Ok(lanes) => {
                    found = !lanes.is_empty();
                    for lane in lanes {
                        let busy = per_endpoint.get(&lane.endpoint_id).copied().unwrap_or(0);
                        if running.len() >= MAX_LANES
                            || busy >= LANES_PER_ENDPOINT
                            || running.contains(&lane)
                        {
                            continue;
                        }
                        running.insert(lane.clone());
                        *per_endpoint.entry(lane.endpoint_id.clone()).or_default() += 1;
                        let sender = self.clone();
                        let done = done_tx.clone();
                        let shutdown = shutdown.clone();
                        tasks.spawn(async move {
                            sender.send_lane(&lane, &shutdown).await;
                            let _ = done.send(lane);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhooks: cannot read the outbox"),
            }
            if tokio::time::Instant::now() >= next_prune {
                next_prune += Duration::from_secs(3600);
                let before = convene_core::Timestamp::from_millis(
                    now.as_millis() - RETENTION.as_millis() as i64,
                );
                match self.store.prune_webhook_deliveries(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        pruned = n,
                        "webhooks: finished deliveries older than 7 days removed"
                    ),
                    Err(e) => tracing::warn!(error = %e, "webhooks: cannot prune the outbox"),
                }
            }
            poll = next_poll(poll, found || !running.is_empty(), self.retry.first_delay);
            tokio::select! {
                () = shutdown.cancelled() => return,
                // Events were committed: look soon (at most every MIN_LOOK_GAP), and start the
                // back-off again.
                () = wake.0.notified() => {
                    poll = POLL;
                    tokio::time::sleep_until(looked + MIN_LOOK_GAP).await;
                }
                Some(lane) = done_rx.recv() => {
                    running.remove(&lane);
                    if let Some(n) = per_endpoint.get_mut(&lane.endpoint_id) {
                        *n = n.saturating_sub(1);
                    }
                }
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Sends the lane's due deliveries in order, stopping at the first failure, or at shutdown
    /// after the delivery in flight (the rest stay due, for the next start).
    async fn send_lane(&self, lane: &Lane, shutdown: &CancellationToken) {
        let now = SystemClock.now();
        // Long enough for every claimed delivery to time out once, plus margin.
        let lease = self.timeout.saturating_mul(BATCH) + Duration::from_secs(30);
        let lease_until = now.plus(lease);
        let batch = match self.store.claim_lane(lane, now, lease_until, BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot claim deliveries");
                return;
            }
        };
        for delivery in &batch {
            if shutdown.is_cancelled() {
                break;
            }
            let attempt = self.attempt(delivery).await;
            self.metrics.count(&attempt.outcome);
            let delivered = attempt.outcome == AttemptOutcome::Delivered;
            if !delivered {
                tracing::info!(url = %delivery.url, meeting = %lane.meeting_id, seq = delivery.event.seq,
                    attempts = delivery.attempts + 1, outcome = ?attempt.outcome, error = attempt.error.as_deref().unwrap_or(""),
                    "webhook delivery failed");
            }
            if let Err(e) = self
                .store
                .record_attempt(lane, delivery.event.seq, &attempt)
                .await
            {
                tracing::warn!(error = %e, "webhooks: cannot record an attempt");
                break;
            }
            if !delivered {
                break;
            }
        }
        if let Err(e) = self.store.release_lane(lane, &batch, lease_until).await {
            tracing::warn!(error = %e, "webhooks: cannot release a lane");
        }
    }

    async fn attempt(&self, delivery: &DueDelivery) -> Attempt {
        let body = body(delivery);
        let now = SystemClock.now();
        let result = match self.signer.webhook_token(body.as_bytes(), now) {
            Ok(token) => self
                .client
                .post(&delivery.url)
                .header(reqwest::header::AUTHORIZATION, token)
                .header(reqwest::header::CONTENT_TYPE, "application/webhook+json")
                .body(body)
                .send()
                .await
                .map_err(|e| describe(&e)),
            Err(e) => Err(format!("cannot sign: {e}")),
        };
        let at = SystemClock.now();
        let (status, error) = match result {
            Ok(response) if response.status().is_success() => {
                return Attempt {
                    outcome: AttemptOutcome::Delivered,
                    at,
                    status: Some(response.status().as_u16()),
                    error: None,
                };
            }
            Ok(response) => (
                Some(response.status().as_u16()),
                format!("HTTP {}", response.status()),
            ),
            Err(error) => (None, error),
        };
        let spread = rand::rng().random::<f64>();
        let outcome = self.retry.after_failure(delivery.attempts + 1, at, spread);
        Attempt {
            outcome,
            at,
            status,
            error: Some(error_text(&error)),
        }
    }
}

/// A short cause for a failed request (no URL repeated, no body).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_redirect() {
        "redirected (not followed)"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

/// LiveKit's name for the events it has an equivalent of.
fn livekit_name(kind: &EventKind) -> Option<&'static str> {
    Some(match kind {
        EventKind::MeetingStarted { .. } => "room_started",
        EventKind::MeetingEnded { .. } => "room_finished",
        EventKind::MediaConnected { .. } => "participant_joined",
        EventKind::MediaDisconnected { .. } => "participant_left",
        EventKind::TrackPublished { .. } => "track_published",
        EventKind::TrackUnpublished { .. } => "track_unpublished",
        _ => return None,
    })
}

/// The POST body: a LiveKit `WebhookEvent` (JSON) with convene's event under `convene`.
pub fn body(delivery: &DueDelivery) -> String {
    let event = &delivery.event;
    let view = EventView::from(event);
    let name = livekit_name(&event.kind)
        .map(str::to_owned)
        .unwrap_or_else(|| view.kind.clone());
    let mut body = json!({
        "event": name,
        "id": format!("EV_{}_{}", event.meeting_id, event.seq),
        "createdAt": event.at.as_secs().to_string(),
        "room": { "name": delivery.room_name.as_str() },
        "convene": {
            "meeting_id": event.meeting_id.to_string(),
            "seq": view.seq,
            "at": view.at,
            "instance_id": view.instance_id,
            "type": view.kind,
            "data": view.data,
        },
    });
    let identity = view
        .data
        .get("identity")
        .or_else(|| view.data.get("from"))
        .and_then(|v| v.as_str());
    if let Some(identity) = identity {
        body["participant"] = json!({ "identity": identity });
    }
    match &event.kind {
        EventKind::TrackPublished {
            track_sid, kind, ..
        } => {
            let kind = match kind.as_str() {
                "audio" => "AUDIO",
                "video" => "VIDEO",
                _ => "DATA",
            };
            body["track"] = json!({ "sid": track_sid, "type": kind });
        }
        EventKind::TrackUnpublished { track_sid, .. } => {
            body["track"] = json!({ "sid": track_sid })
        }
        _ => {}
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use convene_core::event::{Audience, Event};
    use convene_core::ids::{Identity, InstanceId, MeetingId, RoomName};
    use convene_core::participant::Role;
    use convene_core::time::Timestamp;

    use super::*;

    #[test]
    fn an_empty_outbox_is_read_less_and_less_often_but_never_later_than_the_first_retry() {
        let second = Duration::from_secs(1);
        let mut poll = POLL;
        let mut waits = Vec::new();
        for _ in 0..5 {
            poll = next_poll(poll, false, second);
            waits.push(poll.as_millis());
        }
        assert_eq!(waits, [500, 1000, 1000, 1000, 1000]);
        assert_eq!(next_poll(IDLE_POLL, true, second), POLL, "work: look often");
        // A first retry sooner than a second bounds the idle wait; never below POLL.
        let short = Duration::from_millis(600);
        assert_eq!(next_poll(second, false, short), short);
        let tiny = Duration::from_millis(50);
        assert_eq!(next_poll(POLL, false, tiny), POLL);
    }

    fn delivery(kind: EventKind) -> DueDelivery {
        let meeting_id = MeetingId::parse("123456").unwrap();
        DueDelivery {
            lane: Lane {
                endpoint_id: "deployment:http://x/".into(),
                meeting_id: meeting_id.clone(),
            },
            url: "http://x/".into(),
            attempts: 0,
            room_name: RoomName::parse("standup").unwrap(),
            event: Event {
                meeting_id,
                seq: 7,
                at: Timestamp::from_millis(1_700_000_000_123),
                instance_id: InstanceId::from_stored("run1".into()),
                audience: Audience::Everyone,
                kind,
            },
        }
    }

    #[test]
    fn media_events_take_livekit_names_and_fields() {
        let who = Identity::parse("ann").unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&body(&delivery(EventKind::TrackPublished {
                identity: who.clone(),
                track_sid: "TR_1".into(),
                kind: "video".into(),
            })))
            .unwrap();
        assert_eq!(body["event"], "track_published");
        assert_eq!(body["id"], "EV_123456_7");
        assert_eq!(body["createdAt"], "1700000000");
        assert_eq!(body["room"]["name"], "standup");
        assert_eq!(body["participant"]["identity"], "ann");
        assert_eq!(body["track"], json!({"sid": "TR_1", "type": "VIDEO"}));
        assert_eq!(body["convene"]["type"], "media.track_published");
        assert_eq!(body["convene"]["seq"], 7);
        assert_eq!(body["convene"]["meeting_id"], "123456");
    }

    #[test]
    fn other_events_keep_convene_types() {
        let who = Identity::parse("bob").unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&body(&delivery(EventKind::ParticipantJoined {
                identity: who,
                name: "Bob".into(),
                role: Role::Viewer,
            })))
            .unwrap();
        assert_eq!(body["event"], "participant.joined");
        assert_eq!(body["participant"]["identity"], "bob");
        assert_eq!(body["convene"]["data"]["role"], "viewer");
        assert!(body.get("track").is_none());
    }
}
