//! The sans-IO core: rooms, participants, their two str0m peer connections,
//! subscriptions, media and data forwarding. Inputs ([`Input`]) come in with
//! the current time through [`Engine::handle`]; outputs (packets over UDP or TCP,
//! signalling responses, closes, events) queue up for the driver to perform.
//!
//! This file holds [`Engine`] and the types of its interface; `input` the
//! named inputs and their dispatch; the engine's
//! methods live by concern: `state` (rooms, participants, peers, tracks),
//! `membership` (join, leave, announce), `signalling` (a client's requests),
//! `subscriptions` (publishing, down tracks, subscriber offers), `network`
//! (datagrams, timers, str0m events), `forwarding` (media and keyframes),
//! `data` (data packets), `control` (moderation and RoomService), `recording` (recorded rooms'
//! packets and their `active_recording`), `signals`
//! (active speakers and connection quality), `adaptive` (track settings, dynacast) and `rtc`
//! (the str0m configuration).
// Deprecated protocol fields are still read by the clients we serve.
#![allow(deprecated)]

mod adaptive;
mod control;
mod data;
mod forwarding;
mod input;
mod membership;
mod network;
mod recording;
mod rtc;
mod signalling;
mod signals;
mod state;
mod subscriptions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rustc_hash::FxHashMap;
use str0m::Event;
use str0m::crypto::CryptoProvider;

use crate::MediaEvent;
use crate::signal;

use state::{Participant, Room};

pub use input::{Answer, Input};
pub use rtc::{estimating_subscriber_config, rtc_config, subscriber_channels};

/// Identifies one signalling connection (one participant session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Which of a participant's two peer connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PcKind {
    /// The client offers, sends media and data.
    Publisher,
    /// The server offers, sends media and data to the client.
    Subscriber,
}

/// Work for the IO driver. (Variants differ in size; outputs are short-lived queue items.)
#[derive(Debug, PartialEq)]
pub enum Output {
    /// A packet to send from the local address `source` to `destination`: over UDP, or as one
    /// RFC 4571 frame on the TCP connection between those two addresses.
    Transmit {
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Signal {
        conn: ConnId,
        /// Boxed: a response is some 900 bytes, and every forwarded packet's `Transmit` goes
        /// through the same queue (an unboxed one made each `Output` that size).
        response: Box<proto::SignalResponse>,
    },
    /// Close this connection's WebSocket (after sending queued signals).
    Close {
        conn: ConnId,
    },
    Event(MediaEvent),
    /// The engine now takes packets from `source` over `transport` (queued before anything it
    /// sends there): with several engines, the IO layer sends that address's packets here.
    Routed {
        transport: Transport,
        source: SocketAddr,
    },
    /// The engine no longer takes packets from `source` (its participant left).
    Unrouted {
        transport: Transport,
        source: SocketAddr,
    },
    /// A packet of a recorded room's track, for the recorder ([`Input::Record`]).
    Record(crate::record::RecPacket),
}

/// The transport a packet came in on or goes out on: UDP, or a TCP connection (ICE-TCP,
/// RFC 6544) that carries it as one RFC 4571 frame. A TCP connection is named by its local and
/// remote addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub(crate) fn protocol(self) -> str0m::net::Protocol {
        match self {
            Transport::Udp => str0m::net::Protocol::Udp,
            Transport::Tcp => str0m::net::Protocol::Tcp,
        }
    }

    /// The transport of a str0m protocol; `None` for those convene does not offer (TLS).
    pub(crate) fn of(protocol: str0m::net::Protocol) -> Option<Transport> {
        match protocol {
            str0m::net::Protocol::Udp => Some(Transport::Udp),
            str0m::net::Protocol::Tcp => Some(Transport::Tcp),
            _ => None,
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Local UDP media addresses, each advertised as a host candidate.
    pub local_addrs: Vec<SocketAddr>,
    /// Local TCP media addresses, each advertised as a passive TCP host candidate (RFC 6544),
    /// at a lower priority than the UDP ones so that clients prefer UDP.
    pub tcp_addrs: Vec<SocketAddr>,
    pub ping_interval_secs: u32,
    pub ping_timeout_secs: u32,
    /// Seeds every id the engine generates (room, participant and track sids), so an engine is
    /// a function of its config and inputs. The IO layer draws it from the operating system's
    /// RNG; tests fix it.
    pub seed: u64,
    /// TURN servers handed to every joining client in `JoinResponse.ice_servers`, each join with
    /// its own time-limited credential; `None`: none.
    pub turn: Option<crate::turn::TurnConfig>,
    /// Estimate each subscriber's downstream bandwidth (transport-wide congestion control on the
    /// subscriber connection) and fit its video layers to it. Off, subscriber connections carry
    /// no estimation extension (docs/benchmarks.md has the cost).
    pub subscriber_bwe: bool,
}

/// A room as listed by [`Input::ListRooms`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: String,
    pub sid: String,
    pub num_participants: u32,
    pub num_publishers: u32,
    pub creation_time_ms: i64,
}

/// Kind of a data packet, by the channel it travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Reliable,
    Lossy,
}

/// The sans-IO media engine. `convene-sfu`'s crate docs describe the task that drives it.
pub struct Engine {
    config: EngineConfig,
    crypto: Arc<CryptoProvider>,
    rooms: BTreeMap<String, Room>,
    /// Rooms being recorded, by name, with the recording's id: kept whether or not the room
    /// has a session here, so a room placed on this shard later starts recorded.
    recordings: HashMap<String, Arc<str>>,
    /// Keyed by the engine's own sequential connection ids, so the fast hash is safe.
    participants: FxHashMap<ConnId, Participant>,
    route_cache: HashMap<(Transport, SocketAddr), (ConnId, PcKind)>,
    outputs: VecDeque<Output>,
    events: VecDeque<(ConnId, PcKind, Event)>,
    doomed: Vec<(ConnId, proto::DisconnectReason)>,
    /// No peer's str0m timeout is earlier than this. A lower bound, kept as timeouts are set, so
    /// that finding the next wake-up does not scan every peer each turn; it may be early (a
    /// peer's timeout moved later, or the peer left), which costs one scan that resets it.
    earliest_timeout: Instant,
    /// Peers that frames were written to this turn: str0m packetizes them when its timers run.
    due: Vec<(ConnId, PcKind)>,
    /// When the first of `due` was listed.
    due_at: Instant,
    /// Seeded from [`EngineConfig::seed`]: every id the engine makes comes from here. (str0m draws
    /// its own ICE credentials, DTLS keys and SSRCs inside each `Rtc`.)
    rng: StdRng,
    epoch: Instant,
    epoch_unix_ms: i64,
    next_housekeeping: Instant,
    next_track_key: u64,
    /// The speaker timer: when it is next due and when it last ran (the level window's start).
    next_speakers: Instant,
    last_speakers: Instant,
    /// The connection quality timer.
    next_quality: Instant,
}

impl Engine {
    /// A new engine; `now` and `now_unix_ms` anchor the wall-clock used in messages.
    pub fn new(config: EngineConfig, now: Instant, now_unix_ms: i64) -> Engine {
        Engine {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            rooms: BTreeMap::new(),
            recordings: HashMap::new(),
            participants: FxHashMap::default(),
            route_cache: HashMap::new(),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            doomed: Vec::new(),
            earliest_timeout: now,
            due: Vec::new(),
            due_at: now,
            epoch: now,
            epoch_unix_ms: now_unix_ms,
            next_housekeeping: now,
            next_track_key: 0,
            next_speakers: now + signals::SPEAKER_INTERVAL,
            last_speakers: now,
            next_quality: now + signals::QUALITY_INTERVAL,
        }
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        self.epoch_unix_ms + now.saturating_duration_since(self.epoch).as_millis() as i64
    }

    /// The next queued output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Input::Timeout`] is next due.
    pub fn poll_timeout(&self) -> Instant {
        let timers = self
            .earliest_timeout
            .min(self.next_housekeeping)
            .min(self.next_speakers)
            .min(self.next_quality);
        if self.due.is_empty() {
            timers
        } else {
            timers.min(self.due_at)
        }
    }

    fn send(&mut self, conn: ConnId, message: Resp) {
        self.outputs.push_back(Output::Signal {
            conn,
            response: Box::new(signal::response(message)),
        });
    }

    /// Tells the client to leave for `reason` (a disconnect, not a resume) and removes it.
    fn disconnect(&mut self, conn: ConnId, reason: proto::DisconnectReason, now: Instant) {
        self.outputs.push_back(Output::Signal {
            conn,
            response: Box::new(signal::leave(
                reason,
                proto::leave_request::Action::Disconnect,
            )),
        });
        self.remove(conn, reason, now);
    }

    /// Number of participants across all rooms (tests, metrics).
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }
}
