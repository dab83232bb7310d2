//! The engine's state: rooms, participants, their peer connections (behind the panic boundary),
//! published tracks and the down tracks that carry them to subscribers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use livekit_protocol as proto;
use str0m::Rtc;
use str0m::change::SdpPendingOffer;
use str0m::channel::ChannelId;
use str0m::media::{MediaKind, Mid, Pt, Rid};

use crate::Permission;
use crate::adaptive::{Dynacast, LossCap, Quality, TrackSettings};
use crate::forward::{LayerForwarder, LayerSet, SeqRewriter, Vp8Rewriter};
use crate::ids::{RoomSid, TrackSid};
use crate::quality::{LinkWindow, NackMarks};
use crate::speakers::{LevelMeter, SpeakerSet};

use super::{ConnId, PcKind};

/// Names one published track inside the engine, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct TrackKey(pub(super) u64);

pub(super) struct Room {
    pub(super) sid: RoomSid,
    pub(super) creation_ms: i64,
    pub(super) members: Vec<ConnId>,
    /// The speakers the room's members were last told of.
    pub(super) speakers: SpeakerSet,
    /// The recording it is under, if any ([`super::Input::Record`]).
    pub(super) recording: Option<std::sync::Arc<str>>,
}

/// One str0m peer connection behind a panic boundary.
pub(super) struct Peer {
    pub(super) rtc: Option<Rtc>,
    pub(super) next_timeout: Instant,
    /// Listed in `Engine::due`: its timers run at the next `Engine::handle_timeout`.
    pub(super) due: bool,
}

impl Peer {
    pub(super) fn new(rtc: Rtc, now: Instant) -> Peer {
        Peer {
            rtc: Some(rtc),
            next_timeout: now,
            due: false,
        }
    }

    /// Run `f` on the Rtc; a panic kills this peer (returns None from then on).
    pub(super) fn with<R>(&mut self, f: impl FnOnce(&mut Rtc) -> R) -> Option<R> {
        let rtc = self.rtc.as_mut()?;
        match catch_unwind(AssertUnwindSafe(|| f(rtc))) {
            Ok(result) => Some(result),
            Err(_) => {
                tracing::warn!("peer connection panicked; dropping it");
                self.rtc = None;
                None
            }
        }
    }

    pub(super) fn alive(&self) -> bool {
        self.rtc.as_ref().is_some_and(|rtc| rtc.is_alive())
    }
}

pub(super) struct Published {
    pub(super) sid: TrackSid,
    /// Engine-unique, so forwarding matches a packet to its down tracks without comparing sids.
    pub(super) key: TrackKey,
    pub(super) cid: String,
    pub(super) kind: MediaKind,
    pub(super) mid: Option<Mid>,
    pub(super) info: proto::TrackInfo,
    pub(super) layers: LayerSet,
    pub(super) keyframe_requests: Vec<(Option<Rid>, Instant)>,
    /// Audio tracks: the speaking state, from each packet's audio level (RFC 6464).
    pub(super) meter: Option<LevelMeter>,
    /// Simulcast video tracks: which layers the publisher was told to send.
    pub(super) dynacast: Option<Dynacast>,
    /// While its room is recorded: the recording's down track of it.
    pub(super) recorder: Option<super::recording::Recorder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DownState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

impl DownState {
    pub(super) fn mid(self) -> Option<Mid> {
        match self {
            DownState::ToOpen => None,
            DownState::Negotiating(m)
            | DownState::Open(m)
            | DownState::ToStop(m)
            | DownState::NegotiatingStop(m) => Some(m),
        }
    }
}

pub(super) struct DownTrack {
    pub(super) track_sid: String,
    pub(super) source: ConnId,
    pub(super) source_key: TrackKey,
    pub(super) source_sid: String,
    pub(super) kind: MediaKind,
    pub(super) state: DownState,
    pub(super) forwarder: LayerForwarder,
    pub(super) seq: SeqRewriter,
    pub(super) vp8: Vp8Rewriter,
    /// The publisher's payload type last written and the subscriber's matching one, so each
    /// packet does not match codec parameters again; cleared when the subscriber renegotiates.
    pub(super) payload_types: Option<(Pt, Pt)>,
    /// What the subscriber asked for (`UpdateTrackSettings`).
    pub(super) settings: TrackSettings,
    /// The best layer its estimated bandwidth leaves room for.
    pub(super) bwe_cap: Quality,
}

impl DownTrack {
    /// The best layer to forward: what was asked for, within the bandwidth.
    pub(super) fn cap(&self) -> Quality {
        self.settings.max.min(self.bwe_cap)
    }
}

#[derive(Default)]
pub(super) struct Channels {
    pub(super) reliable: Option<ChannelId>,
    pub(super) lossy: Option<ChannelId>,
    pub(super) reliable_open: bool,
    pub(super) lossy_open: bool,
}

pub(super) struct Participant {
    pub(super) room: String,
    pub(super) info: proto::ParticipantInfo,
    pub(super) permission: Permission,
    pub(super) auto_subscribe: bool,
    pub(super) last_seen: Instant,
    pub(super) publisher: Peer,
    pub(super) subscriber: Peer,
    pub(super) published: Vec<Published>,
    pub(super) unbound_mids: Vec<(Mid, MediaKind)>,
    pub(super) down: Vec<DownTrack>,
    pub(super) sub_offer_id: u32,
    pub(super) sub_pending: Option<SdpPendingOffer>,
    pub(super) sub_channels: Channels,
    pub(super) pub_channels: HashMap<ChannelId, String>,
    pub(super) reliable_backlog: VecDeque<Vec<u8>>,
    pub(super) subscribed: HashSet<String>,
    pub(super) unsubscribed: HashSet<String>,
    /// When the last datagram from this participant (either connection) arrived.
    pub(super) last_rx: Instant,
    /// What its connections' statistics showed since the last quality rating.
    pub(super) link: LinkWindow,
    /// Each stream's NACK and packet totals at its last statistics report, publisher side (NACKs
    /// convene sent) and subscriber side (NACKs it received).
    pub(super) nacks: NackMarks<(PcKind, Mid, Option<Rid>)>,
    /// The quality the room was last told of for it.
    pub(super) quality: Option<proto::ConnectionQuality>,
    /// It was sent the room's current speakers, and everyone's connection quality, once: from
    /// then on it gets the changes.
    pub(super) speakers_synced: bool,
    pub(super) quality_synced: bool,
    /// Track settings it sent (`UpdateTrackSettings`), by track sid, kept for down tracks made
    /// later (a settings message may come before the subscription it is about).
    pub(super) track_settings: HashMap<String, TrackSettings>,
    /// The subscriber connection's latest bandwidth estimate, bits per second.
    pub(super) bwe_estimate: Option<u64>,
    /// The bitrate the estimator was last asked to find (what its tracks want at best).
    pub(super) bwe_desired: u64,
    /// Each video stream it is sent, by mid: what its statistics last showed.
    pub(super) egress: HashMap<Mid, Egress>,
    /// Its downlink's rate as its receiver reports show it, capping the estimate.
    pub(super) loss_cap: LossCap,
}

/// A video stream a subscriber is sent, at its last statistics: bytes sent so far and when, and
/// the rate and loss of the period that ended there, until the layers are next fitted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Egress {
    pub(super) bytes: u64,
    pub(super) at: Instant,
    pub(super) report: Option<(u64, f32)>,
}

impl Participant {
    pub(super) fn peer(&mut self, pc: PcKind) -> &mut Peer {
        match pc {
            PcKind::Publisher => &mut self.publisher,
            PcKind::Subscriber => &mut self.subscriber,
        }
    }

    pub(super) fn identity(&self) -> &str {
        &self.info.identity
    }

    pub(super) fn sid(&self) -> &str {
        &self.info.sid
    }

    /// The full ParticipantInfo as clients see it.
    pub(super) fn snapshot(&self) -> proto::ParticipantInfo {
        let mut info = self.info.clone();
        info.tracks = self
            .published
            .iter()
            .filter(|t| t.mid.is_some())
            .map(|t| t.info.clone())
            .collect();
        info.is_publisher = !info.tracks.is_empty();
        info
    }

    pub(super) fn wants(&self, track_sid: &str) -> bool {
        self.permission.can_subscribe
            && if self.auto_subscribe {
                !self.unsubscribed.contains(track_sid)
            } else {
                self.subscribed.contains(track_sid)
            }
    }
}
