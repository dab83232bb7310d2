//! convene-sfu: the embedded media engine's IO. The engine itself (rooms, participants, str0m
//! peer connections, LiveKit signalling, forwarding) is `convene-sfu-core`, which does no IO;
//! this crate feeds it and carries out what it asks for.
//!
//! # Shape
//!
//! * [`engine`] (from `convene-sfu-core`, re-exported with [`forward`], [`signal`] and [`ids`])
//!   is the sans-IO core. [`engine::Engine`] owns every room, participant and str0m `Rtc`. It
//!   takes named inputs ([`engine::Input`]: a join, a decoded `SignalRequest`, a UDP datagram,
//!   time, a control command) through [`engine::Engine::handle`] and queues outputs (datagrams
//!   to send, `SignalResponse`s for a connection, connection closes, [`MediaEvent`]s). It never
//!   touches a socket or a clock; tests drive it with time passed in.
//! * [`driver`] is the thin tokio IO layer: the UDP sockets, the timer and the command channel
//!   feeding the engine; it draws the engine's seed from the OS.
//! * [`tcp`] is ICE over TCP: the listeners, one task per connection reading and writing RFC 4571
//!   frames ([`framing`]), the caps on connections not yet authenticated by ICE.
//! * [`batch`] sends the engine's datagrams, grouped into GSO runs by the core's
//!   [`batch::Batcher`], through `quinn-udp`.
//! * [`http`] is the axum router (`/rtc`, `/rtc/validate`, the `/rtc/v1`
//!   404s) and the per-WebSocket tasks.
//! * [`recorder`] is the recording thread: each recorded track's packets, assembled into frames
//!   (`convene-sfu-core`'s `record::assemble`), written to a WebM or Matroska file of its own.
//! * [`budget`] holds the token buckets (pure) behind the connect budget per
//!   identity and room and the request budget per signalling connection.
//!
//! # Threading model
//!
//! Media runs on [`SfuConfig::threads`] *shards*, each a thread with its own single-threaded
//! tokio runtime and one task (its *engine task*) that owns an [`engine::Engine`] and therefore
//! every room, participant and str0m `Rtc` of that shard; nothing in an engine is shared or
//! locked. A room is never split: [`SfuControl`] places each room, at its first session, on the
//! shard with the fewest sessions ([`shards::RoomTable`]), and every session and control command
//! of the room goes there. The first shard's runtime also reads the UDP sockets (one per local
//! address, all on the same port) and serves the TCP connections (one task each); each packet
//! goes to the shard whose engine said it takes packets from that source
//! ([`shards::Routes`]; a stranger's first STUN binding request goes to every shard, and the
//! one whose peer it is for claims the address). Each engine task `select!`s over its packets, a
//! bounded command channel and a timer set to the earliest str0m timeout. Each WebSocket runs in
//! its own task: it decodes frames (size-capped at 1 MiB) and sends commands to its room's
//! engine task, and writes the engine's `SignalResponse`s from a bounded per-connection queue; a
//! client that does not read fills its queue and is disconnected rather than stalling the
//! engine. [`SfuControl`] is a cloneable handle that sends commands with a oneshot reply.
//! Each shard sends UDP on its own descriptor of each socket, non-blocking (a full socket buffer
//! drops the datagram, as the network would), so an engine task never waits on IO.

pub mod batch;
pub mod budget;
pub mod driver;
pub mod http;
pub mod recorder;
pub mod tcp;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

pub use budget::Rate;
pub use convene_sfu_core::turn::{TurnConfig, TurnError, TurnSecret, TurnUrl};
pub use convene_sfu_core::{
    Admitted, DataKind, EngineError, MediaEvent, ParticipantSid, Permission, RoomSid, RoomSummary,
    SERVER_VERSION, TrackSid, engine, forward, framing, ids, record, shards, signal, turn,
};
pub use driver::{MediaCounts, SfuControl, primary_ip};
pub use recorder::{Recorder, RecorderError, RecorderNotice, RecordingFiles, TrackFile};

/// Largest signalling message accepted from a client (bytes).
pub const MAX_SIGNAL_MESSAGE_BYTES: usize = 1024 * 1024;

/// Configuration of the media engine.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// One UDP port for all peers. Port 0 picks an ephemeral port (tests).
    pub udp_bind: SocketAddr,
    /// The TCP port of ICE over TCP (RFC 6544 passive candidates, advertised on the same IPs
    /// as UDP, ranked below it), for clients whose UDP is blocked. Port 0 picks an ephemeral
    /// port (tests); `None` offers no TCP.
    pub tcp_bind: Option<SocketAddr>,
    /// Addresses put in the SDP as host candidates (1:1 NAT: the public
    /// address). Empty: the local interface addresses, 127.0.0.1 included.
    pub advertise_ips: Vec<IpAddr>,
    /// Seconds between client pings (sent to clients in the JoinResponse).
    pub ping_interval_secs: u32,
    /// Seconds of signalling silence after which a participant is dropped.
    pub ping_timeout_secs: u32,
    /// Signalling connects one identity may make to one room (refused beyond with 429).
    pub join_rate: Rate,
    /// Signalling requests (WebSocket frames) one connection may send; beyond, it is closed.
    pub signal_rate: Rate,
    /// TURN servers handed to clients in the JoinResponse, with time-limited credentials.
    pub turn: Option<TurnConfig>,
    /// Estimate each subscriber's bandwidth and fit its video layers to it
    /// (`EngineConfig::subscriber_bwe`).
    pub subscriber_bwe: bool,
    /// Engine shards: media threads, each owning whole rooms (at least one; default: one per
    /// core, [`default_threads`]).
    pub threads: usize,
}

/// One media thread per core the process may use (one if that cannot be told).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The default connect budget of an identity in a room: 10 at once, then one every 6 seconds.
/// A client that reconnects after a network change spends one or two; a loop is stopped.
pub const JOIN_RATE: Rate = Rate {
    burst: 10,
    period: Duration::from_secs(6),
};

/// The default request budget of a signalling connection: 200 at once, then 50 a second. Real
/// clients stay far below (docs in ARCHITECTURE.md, "Invariants"): a ping every few seconds,
/// their candidates and offers in a burst at the start, updates on user actions.
pub const SIGNAL_RATE: Rate = Rate {
    burst: 200,
    period: Duration::from_millis(20),
};

impl Default for SfuConfig {
    fn default() -> Self {
        SfuConfig {
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 7882)),
            tcp_bind: Some(SocketAddr::from(([0, 0, 0, 0], 7881))),
            advertise_ips: Vec::new(),
            ping_interval_secs: 5,
            ping_timeout_secs: 15,
            join_rate: JOIN_RATE,
            signal_rate: SIGNAL_RATE,
            turn: None,
            subscriber_bwe: false,
            threads: default_threads(),
        }
    }
}

/// Why [`Admission::admit`] refused a join, with a message for the client; the SFU answers it
/// as plain HTTP with the kind's status ([`Refusal::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The credentials are not good (malformed, expired, unknown key, another room): 401.
    Unauthenticated(String),
    /// Good credentials that may not join (banned, not admitted, the meeting full...): 403.
    Forbidden(String),
    /// The deciding side cannot answer now (its store failed or is busy): 503 with `Retry-After`,
    /// so a client tries again rather than taking its credentials for bad. It carries no message:
    /// the cause is logged where it happened, never sent to the client.
    Unavailable,
}

/// What a client is told when its join cannot be decided now.
pub const UNAVAILABLE_MESSAGE: &str = "temporarily unavailable; try again";

impl Refusal {
    /// The HTTP status a refused join is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
            Self::Unavailable => 503,
        }
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated(message) | Self::Forbidden(message) => message,
            Self::Unavailable => UNAVAILABLE_MESSAGE,
        }
    }
}

/// Decides who may join. Implemented by convene's core wiring.
pub trait Admission: Send + Sync + 'static {
    /// Verify `token` and decide; called before the WebSocket upgrade.
    fn admit(&self, token: &str) -> BoxFuture<'_, Result<Admitted, Refusal>>;
    /// Media-side events flow back into the meeting's event log.
    fn on_event(&self, event: MediaEvent);
}

/// Errors of the media engine.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("could not bind the media UDP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("could not listen for media over TCP on {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the media engine has stopped")]
    Stopped,
    #[error("could not start the media thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("internal error in the media engine: {0}")]
    Internal(String),
    #[error("could not seed the media engine from the operating system's RNG: {0}")]
    Entropy(#[source] rand::rand_core::OsError),
}

impl From<EngineError> for SfuError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(what) => SfuError::NotFound(what),
        }
    }
}

/// The running media engine: the engine task plus its HTTP front end.
pub struct Sfu {
    driver: driver::DriverHandle,
    admission: Arc<dyn Admission>,
    joins: http::JoinBudgets,
    signal_rate: Rate,
}

/// The media engine with its UDP sockets bound, not running yet: its [`SfuControl`] exists
/// already, so what drives media (convene's core service) can be built before the engine's
/// [`Admission`], which needs that service, and the engine is then started with it.
pub struct BoundSfu {
    driver: driver::Bound,
    joins: http::JoinBudgets,
    signal_rate: Rate,
}

impl BoundSfu {
    /// The handle for moderation and the RoomService API; commands sent before
    /// [`BoundSfu::start`] are carried out once the engine runs.
    pub fn control(&self) -> SfuControl {
        self.driver.control().clone()
    }

    /// All local UDP addresses that carry media (one per advertised IP).
    pub fn local_udp_addrs(&self) -> Vec<SocketAddr> {
        self.driver.local_addrs().to_vec()
    }

    /// All local TCP addresses of ICE over TCP (one per advertised IP; none when TCP is off).
    pub fn local_tcp_addrs(&self) -> Vec<SocketAddr> {
        self.driver.tcp_addrs().to_vec()
    }

    /// Starts the engine task, asking `admission` before every join.
    pub async fn start(self, admission: Arc<dyn Admission>) -> Result<Sfu, SfuError> {
        let driver = self.driver.start(admission.clone()).await?;
        Ok(Sfu {
            driver,
            admission,
            joins: self.joins,
            signal_rate: self.signal_rate,
        })
    }
}

impl Sfu {
    /// Binds the UDP sockets; [`BoundSfu::start`] then starts the engine task.
    pub fn bind(config: SfuConfig) -> Result<BoundSfu, SfuError> {
        let joins = Arc::new(Mutex::new(budget::Budgets::new(config.join_rate)));
        let signal_rate = config.signal_rate;
        Ok(BoundSfu {
            driver: driver::bind(config)?,
            joins,
            signal_rate,
        })
    }

    /// Binds the UDP sockets and starts the engine task.
    pub async fn start(config: SfuConfig, admission: Arc<dyn Admission>) -> Result<Sfu, SfuError> {
        Self::bind(config)?.start(admission).await
    }

    /// `/rtc`, `/rtc/validate` and CORS-carrying 404s on `/rtc/v1*`. Every router made here
    /// shares the one connect budget.
    pub fn router(&self) -> axum::Router {
        http::router(http::HttpState {
            admission: self.admission.clone(),
            control: self.driver.control.clone(),
            joins: self.joins.clone(),
            signal_rate: self.signal_rate,
        })
    }

    /// A cloneable handle for moderation and the RoomService API.
    pub fn control(&self) -> SfuControl {
        self.driver.control.clone()
    }

    /// The media UDP address (the first local socket).
    pub fn local_udp_addr(&self) -> SocketAddr {
        self.driver.local_addrs[0]
    }

    /// All local UDP addresses that carry media (one per advertised IP).
    pub fn local_udp_addrs(&self) -> Vec<SocketAddr> {
        self.driver.local_addrs.clone()
    }

    /// All local TCP addresses of ICE over TCP (one per advertised IP; none when TCP is off).
    pub fn local_tcp_addrs(&self) -> Vec<SocketAddr> {
        self.driver.tcp_addrs.clone()
    }

    /// Disconnect everyone and stop the engine task.
    pub async fn shutdown(self) {
        self.driver.shutdown().await;
    }
}
