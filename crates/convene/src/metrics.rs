//! `/metrics` in the Prometheus text format (OpenMetrics), through `prometheus-client`: one
//! [`Registry`] per server (no global), rendered by convene's own router. Counters are kept where
//! things happen (HTTP requests by the API's middleware, webhook attempts by the sender, media
//! datagrams by the media thread's atomics); gauges are read at scrape time, so requests pay
//! nothing for them: one counting query on the store (meetings, people by state, the webhook
//! outbox), the realtime hub's subscriber count, and the embedded SFU's rooms, participants and
//! tracks. Another series is one more field registered in [`Metrics::new`] (a histogram kept
//! by its owner, as [`HttpMetrics`] is).
//!
//! Served on the main address to admins only (the API key as Basic credentials, or an admin
//! token), and without authentication on `CONVENE_METRICS_ADDR` when it is set.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use convene_api::metrics::HttpMetrics;
use convene_api::{AppState, Hub};
use convene_sfu::shards::Load;
use convene_sfu::{MediaCounts, SfuControl};
use convene_store::SqlStore;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::webhooks::WebhookMetrics;

/// The OpenMetrics text format's content type (Prometheus reads it).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the store's counts before it renders what it has.
const CENSUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Meeting statuses and person states the gauges always show (zero included).
const MEETING_STATUSES: [&str; 2] = ["created", "live"];
const PERSON_STATES: [&str; 3] = ["waiting", "admitted", "joined"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

/// Every series of one server, and what the scrape-time gauges are read from.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub webhooks: WebhookMetrics,
    /// From a commit's notification to its arrival here (several nodes).
    pub notify_delay: Histogram,
    meetings: Family<StatusLabel, Gauge>,
    people: Family<StateLabel, Gauge>,
    subscribers: Gauge,
    outbox: Gauge,
    sfu_rooms: Gauge,
    sfu_participants: Gauge,
    sfu_tracks: Gauge,
    store: Arc<SqlStore>,
    hub: Hub,
    sfu: Option<SfuControl>,
}

impl Metrics {
    /// The registry with every series; `sfu` is the embedded engine (none with an external
    /// LiveKit, whose own metrics cover its media).
    pub fn new(store: Arc<SqlStore>, hub: Hub, sfu: Option<SfuControl>) -> Self {
        let mut registry = Registry::default();
        let http = HttpMetrics::register(&mut registry);
        let webhooks = WebhookMetrics::register(&mut registry);
        // 0.5 ms .. 4 s.
        let notify_delay = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register_with_unit(
            "convene_event_notify_delay",
            "From a commit's notification through PostgreSQL (the committing node's clock) to its arrival at this node (this node's clock); every node's commits, this one's too",
            Unit::Seconds,
            notify_delay.clone(),
        );
        let meetings = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "convene_meetings",
            "Meetings not ended, by status (created, live)",
            meetings.clone(),
        );
        let people = Family::<StateLabel, Gauge>::default();
        registry.register(
            "convene_people",
            "People in a meeting's current run, by state (waiting, admitted, joined)",
            people.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let subscribers = gauge(
            &mut registry,
            "convene_event_subscribers",
            "Live realtime event streams (SSE and WebSocket) on this node",
        );
        let outbox = gauge(
            &mut registry,
            "convene_webhook_outbox_pending",
            "Webhook deliveries not yet made (the outbox depth)",
        );
        let sfu_rooms = gauge(
            &mut registry,
            "convene_sfu_rooms",
            "Media rooms on this node's embedded SFU",
        );
        let sfu_participants = gauge(
            &mut registry,
            "convene_sfu_participants",
            "Participants connected to this node's embedded SFU",
        );
        let sfu_tracks = gauge(
            &mut registry,
            "convene_sfu_tracks",
            "Tracks published on this node's embedded SFU",
        );
        if let Some(control) = &sfu {
            registry.register_collector(Box::new(DatagramCounters(control.clone())));
            registry.register_collector(Box::new(ShardLoads(control.clone())));
        }
        registry.register_collector(Box::new(CommitCounters(store.clone())));
        Self {
            registry,
            http,
            webhooks,
            notify_delay,
            meetings,
            people,
            subscribers,
            outbox,
            sfu_rooms,
            sfu_participants,
            sfu_tracks,
            store,
            hub,
            sfu,
        }
    }

    /// Reads the scrape-time gauges, then renders every series.
    pub async fn render(&self) -> String {
        self.refresh().await;
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing into a String fails only on a bug in an encoder.
            tracing::error!(%error, "metrics: cannot encode");
        }
        text
    }

    async fn refresh(&self) {
        self.subscribers
            .set(gauge_value(self.hub.total_subscribers()));
        match tokio::time::timeout(CENSUS_TIMEOUT, self.store.census()).await {
            Ok(Ok(census)) => {
                for status in MEETING_STATUSES {
                    let count = census
                        .meetings
                        .iter()
                        .find(|(name, _)| name == status)
                        .map_or(0, |(_, n)| *n);
                    self.meetings
                        .get_or_create(&StatusLabel { status })
                        .set(gauge_value(count));
                }
                for state in PERSON_STATES {
                    let count = census
                        .people
                        .iter()
                        .find(|(name, _)| name == state)
                        .map_or(0, |(_, n)| *n);
                    self.people
                        .get_or_create(&StateLabel { state })
                        .set(gauge_value(count));
                }
                self.outbox.set(gauge_value(census.webhooks_pending));
            }
            Ok(Err(error)) => tracing::warn!(%error, "metrics: the store's counts are unavailable"),
            Err(_) => tracing::warn!("metrics: the store's counts took too long"),
        }
        if let Some(control) = &self.sfu {
            match sfu_counts(control).await {
                Ok((rooms, participants, tracks)) => {
                    self.sfu_rooms.set(gauge_value(rooms));
                    self.sfu_participants.set(gauge_value(participants));
                    self.sfu_tracks.set(gauge_value(tracks));
                }
                Err(error) => tracing::warn!(%error, "metrics: the media engine did not answer"),
            }
        }
    }

    /// `GET /metrics` on the main address, for admins.
    pub fn admin_router(self: &Arc<Self>, state: AppState) -> Router {
        let metrics = self.clone();
        Router::new()
            .route(
                "/metrics",
                get(move |_admin: convene_api::auth::Admin| async move {
                    openmetrics(metrics.render().await)
                }),
            )
            .with_state(state)
    }

    /// `GET /metrics` without authentication, for `CONVENE_METRICS_ADDR`.
    pub fn open_router(self: &Arc<Self>) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || async move { openmetrics(metrics.render().await) }),
        )
    }
}

fn openmetrics(text: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response()
}

fn gauge_value(count: impl TryInto<i64>) -> i64 {
    count.try_into().unwrap_or(i64::MAX)
}

/// Rooms, participants and published tracks on the embedded engine (one control call for the
/// rooms, one per room for its participants).
async fn sfu_counts(control: &SfuControl) -> Result<(usize, usize, usize), convene_sfu::SfuError> {
    let rooms = control.list_rooms().await?;
    let mut participants = 0;
    let mut tracks = 0;
    for room in &rooms {
        // A room closed between the two calls has nobody in it.
        let Ok(people) = control.list_participants(&room.name).await else {
            continue;
        };
        participants += people.len();
        tracks += people.iter().map(|p| p.tracks.len()).sum::<usize>();
    }
    Ok((rooms.len(), participants, tracks))
}

/// The group commit's counters, read (atomic loads) at each scrape: changes per transaction is
/// how much a crowd was grouped.
struct CommitCounters(Arc<SqlStore>);

impl std::fmt::Debug for CommitCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CommitCounters").finish_non_exhaustive()
    }
}

impl Collector for CommitCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.commit_counts();
        for (name, help, value) in [
            (
                "convene_store_commits",
                "Transactions the store's group commit ran",
                counts.transactions,
            ),
            (
                "convene_store_committed_changes",
                "Changes those transactions held (one per operation that changed a meeting)",
                counts.changes,
            ),
            (
                "convene_store_commit_fallbacks",
                "Batches written again one savepoint per meeting, after the batch as one failed",
                counts.fallbacks,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        Ok(())
    }
}

/// The media thread's datagram counters, read (atomic loads) at each scrape.
struct DatagramCounters(SfuControl);

impl std::fmt::Debug for DatagramCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DatagramCounters").finish_non_exhaustive()
    }
}

impl Collector for DatagramCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let MediaCounts {
            udp_sent,
            udp_dropped,
            tcp_sent,
            tcp_dropped,
        } = self.0.media_counts();
        for (name, help, udp, tcp) in [
            (
                "convene_sfu_datagrams_sent",
                "Media datagrams the embedded SFU sent (RTP, RTCP, DTLS, STUN), by transport",
                udp_sent,
                tcp_sent,
            ),
            (
                "convene_sfu_datagrams_dropped",
                "Media datagrams dropped on a full socket buffer (UDP) or a full connection queue (TCP)",
                udp_dropped,
                tcp_dropped,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (transport, value) in [("udp", udp), ("tcp", tcp)] {
                let labels = TransportLabel { transport };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let family = encoder.encode_descriptor(
            "convene_recording_packets_dropped",
            "Recorded media packets dropped because the recorder's queue was full (the file then waits for a keyframe)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.recorder_dropped()).encode(family)?;
        Ok(())
    }
}

/// Each media thread's (engine shard's) sessions and rooms, read from the room table (one short
/// lock) at each scrape: how evenly the rooms are spread.
struct ShardLoads(SfuControl);

impl std::fmt::Debug for ShardLoads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardLoads").finish_non_exhaustive()
    }
}

impl Collector for ShardLoads {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let loads = self.0.shard_loads();
        let sessions: fn(&Load) -> u32 = |load| load.sessions;
        let rooms: fn(&Load) -> u32 = |load| load.rooms;
        for (name, help, value) in [
            (
                "convene_sfu_shard_sessions",
                "Signalling sessions on each media thread of the embedded SFU (CONVENE_RTC_THREADS)",
                sessions,
            ),
            (
                "convene_sfu_shard_rooms",
                "Rooms on each media thread of the embedded SFU (a room is never split)",
                rooms,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (shard, load) in loads.iter().enumerate() {
                let labels = ShardLabel {
                    shard: shard.to_string(),
                };
                ConstGauge::new(i64::from(value(load))).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
