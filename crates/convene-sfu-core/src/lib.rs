//! convene-sfu-core: the media engine without IO. It owns every room, participant and str0m peer
//! connection, speaks the LiveKit client signalling protocol (legacy `/rtc`, two peer connections
//! per participant) and forwards media and data between participants; it takes inputs and the
//! current time and queues outputs, and never touches a socket, a clock or the OS's randomness
//! (`convene-sfu` does the IO).
//!
//! * [`engine`]: [`engine::Engine`], driven through [`engine::Engine::handle`] with named
//!   [`engine::Input`]s (a join, a decoded `SignalRequest`, a UDP datagram or TCP frame, time, a control
//!   command or query); outputs (datagrams to send, `SignalResponse`s for a connection,
//!   connection closes, [`MediaEvent`]s) come out of [`engine::Engine::poll_output`]. Its ids come
//!   from [`engine::EngineConfig::seed`].
//! * [`forward`]: the pure per-subscriber forwarding rules: simulcast layer choice, switching on
//!   keyframes, rewriting RTP timestamps, sequence numbers and VP8 picture ids.
//! * [`signal`]: LiveKit protocol messages (JoinResponse, ParticipantInfo, TrackInfo), `/rtc`
//!   query parameters, trickle JSON, data packet routing.
//! * [`speakers`]: active speakers from RFC 6464 audio levels (a smoothed meter per audio track,
//!   the changes per room); [`quality`]: connection quality from loss, jitter and round-trip time.
//! * [`turn`]: the TURN servers handed to clients in the JoinResponse, with time-limited
//!   credentials in coturn's `use-auth-secret` scheme.
//! * [`adaptive`]: adaptive streams: a subscriber's track settings and the layer they pick, the
//!   share of its estimated bandwidth each video track gets, and which layers a publisher must
//!   keep sending (dynacast).
//! * [`ids`]: room, participant and track sids in LiveKit's format.
//! * [`batch`]: the grouping of outgoing datagrams into UDP GSO runs (the send is IO).
//! * [`record`]: the recorded packets the engine hands out, and their assembly into frames.
//! * [`framing`]: RFC 4571 framing of packets on ICE-TCP connections and the checks their frames
//!   pass (the sockets are IO).
//!
//! Every call into a participant's `Rtc` runs behind `catch_unwind`: a panic caused by hostile
//! input ends that participant only. Every mutation of an `Rtc` is followed by draining
//! `poll_output` until it yields a timeout.

pub mod adaptive;
pub mod batch;
pub mod engine;
pub mod forward;
pub mod framing;
pub mod ids;
pub mod quality;
pub mod record;
pub mod shards;
pub mod signal;
pub mod speakers;
pub mod turn;

pub use engine::{DataKind, RoomSummary};
pub use ids::{ParticipantSid, RoomSid, TrackSid};

/// The version reported to clients in `ServerInfo.version` (must be semver).
pub const SERVER_VERSION: &str = "1.9.0";

/// What a participant may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub hidden: bool,
    pub room_admin: bool,
}

impl Default for Permission {
    fn default() -> Self {
        Permission {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
            hidden: false,
            room_admin: false,
        }
    }
}

/// A join that was admitted (by convene-sfu's `Admission`): who joins which room, as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub room: String,
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub permission: Permission,
}

/// Media-side events reported to the rest of convene.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    ParticipantJoined {
        room: String,
        identity: String,
        sid: String,
    },
    ParticipantLeft {
        room: String,
        identity: String,
        sid: String,
        reason: String,
    },
    TrackPublished {
        room: String,
        identity: String,
        track_sid: String,
        kind: String,
        source: String,
    },
    TrackUnpublished {
        room: String,
        identity: String,
        track_sid: String,
    },
}

/// Why the engine refused a control command or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("{0} not found")]
    NotFound(String),
}
