//! The sans-IO core: rooms, participants, their two str0m peer connections,
//! subscriptions, media and data forwarding. Inputs come in with the current
//! time; outputs (datagrams, signalling responses, closes, events) queue up
//! for the driver to perform.
// Deprecated protocol fields are still read by the clients we serve.
#![allow(deprecated)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use prost::Message;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rustc_hash::FxHashMap;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc, RtcConfig};

use crate::forward::{
    FrameMeta, LayerForwarder, LayerSet, SeqRewriter, Verdict, Vp8Ids, Vp8Rewriter, starts_keyframe,
};
use crate::ids::{ParticipantSid, RoomSid, TrackSid};
use crate::signal::{self, JoinParams};
use crate::{Admitted, MediaEvent, Permission, SfuError};

/// Identifies one signalling connection (one participant session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Names one published track inside the engine, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrackKey(u64);

/// Which of a participant's two peer connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PcKind {
    /// The client offers, sends media and data.
    Publisher,
    /// The server offers, sends media and data to the client.
    Subscriber,
}

/// Work for the IO driver. (Variants differ in size; outputs are short-lived queue items.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    Transmit {
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Signal {
        conn: ConnId,
        response: proto::SignalResponse,
    },
    /// Close this connection's WebSocket (after sending queued signals).
    Close {
        conn: ConnId,
    },
    Event(MediaEvent),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Local media addresses, each advertised as a host candidate.
    pub local_addrs: Vec<SocketAddr>,
    pub ping_interval_secs: u32,
    pub ping_timeout_secs: u32,
}

/// A room as listed by [`Engine::list_rooms`].
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

const MAX_TRACKS_PER_PARTICIPANT: usize = 32;
const MAX_DATA_PACKET_BYTES: usize = 256 * 1024;
const MAX_RELIABLE_BACKLOG: usize = 256;
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

struct Room {
    sid: RoomSid,
    creation_ms: i64,
    members: Vec<ConnId>,
}

/// One str0m peer connection behind a panic boundary.
struct Peer {
    rtc: Option<Rtc>,
    next_timeout: Instant,
    /// Listed in [`Engine::due`]: its timers run at the next [`Engine::handle_timeout`].
    due: bool,
}

impl Peer {
    fn new(rtc: Rtc, now: Instant) -> Peer {
        Peer {
            rtc: Some(rtc),
            next_timeout: now,
            due: false,
        }
    }

    /// Run `f` on the Rtc; a panic kills this peer (returns None from then on).
    fn with<R>(&mut self, f: impl FnOnce(&mut Rtc) -> R) -> Option<R> {
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

    fn alive(&self) -> bool {
        self.rtc.as_ref().is_some_and(|rtc| rtc.is_alive())
    }
}

struct Published {
    sid: TrackSid,
    /// Engine-unique, so forwarding matches a packet to its down tracks without comparing sids.
    key: TrackKey,
    cid: String,
    kind: MediaKind,
    mid: Option<Mid>,
    info: proto::TrackInfo,
    layers: LayerSet,
    keyframe_requests: Vec<(Option<Rid>, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DownState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

impl DownState {
    fn mid(self) -> Option<Mid> {
        match self {
            DownState::ToOpen => None,
            DownState::Negotiating(m)
            | DownState::Open(m)
            | DownState::ToStop(m)
            | DownState::NegotiatingStop(m) => Some(m),
        }
    }
}

struct DownTrack {
    track_sid: String,
    source: ConnId,
    source_key: TrackKey,
    source_sid: String,
    kind: MediaKind,
    state: DownState,
    forwarder: LayerForwarder,
    seq: SeqRewriter,
    vp8: Vp8Rewriter,
    /// The publisher's payload type last written and the subscriber's matching one, so each
    /// packet does not match codec parameters again; cleared when the subscriber renegotiates.
    payload_types: Option<(Pt, Pt)>,
}

#[derive(Default)]
struct Channels {
    reliable: Option<ChannelId>,
    lossy: Option<ChannelId>,
    reliable_open: bool,
    lossy_open: bool,
}

struct Participant {
    room: String,
    info: proto::ParticipantInfo,
    permission: Permission,
    auto_subscribe: bool,
    last_seen: Instant,
    publisher: Peer,
    subscriber: Peer,
    published: Vec<Published>,
    unbound_mids: Vec<(Mid, MediaKind)>,
    down: Vec<DownTrack>,
    sub_offer_id: u32,
    sub_pending: Option<SdpPendingOffer>,
    sub_channels: Channels,
    pub_channels: HashMap<ChannelId, String>,
    reliable_backlog: VecDeque<Vec<u8>>,
    subscribed: HashSet<String>,
    unsubscribed: HashSet<String>,
}

impl Participant {
    fn peer(&mut self, pc: PcKind) -> &mut Peer {
        match pc {
            PcKind::Publisher => &mut self.publisher,
            PcKind::Subscriber => &mut self.subscriber,
        }
    }

    fn identity(&self) -> &str {
        &self.info.identity
    }

    fn sid(&self) -> &str {
        &self.info.sid
    }

    /// The full ParticipantInfo as clients see it.
    fn snapshot(&self) -> proto::ParticipantInfo {
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

    fn wants(&self, track_sid: &str) -> bool {
        self.permission.can_subscribe
            && if self.auto_subscribe {
                !self.unsubscribed.contains(track_sid)
            } else {
                self.subscribed.contains(track_sid)
            }
    }
}

/// The sans-IO media engine. See the crate docs for the threading model.
pub struct Engine {
    config: EngineConfig,
    crypto: Arc<CryptoProvider>,
    rooms: BTreeMap<String, Room>,
    /// Keyed by the engine's own sequential connection ids, so the fast hash is safe.
    participants: FxHashMap<ConnId, Participant>,
    route_cache: HashMap<SocketAddr, (ConnId, PcKind)>,
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
    rng: StdRng,
    epoch: Instant,
    epoch_unix_ms: i64,
    next_housekeeping: Instant,
    next_track_key: u64,
}

impl Engine {
    /// A new engine; `now` and `now_unix_ms` anchor the wall-clock used in messages.
    pub fn new(config: EngineConfig, now: Instant, now_unix_ms: i64) -> Engine {
        Engine {
            config,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            rooms: BTreeMap::new(),
            participants: FxHashMap::default(),
            route_cache: HashMap::new(),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            doomed: Vec::new(),
            earliest_timeout: now,
            due: Vec::new(),
            due_at: now,
            rng: StdRng::from_os_rng(),
            epoch: now,
            epoch_unix_ms: now_unix_ms,
            next_housekeeping: now,
            next_track_key: 0,
        }
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        self.epoch_unix_ms + now.saturating_duration_since(self.epoch).as_millis() as i64
    }

    /// The next queued output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Engine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let timers = self.earliest_timeout.min(self.next_housekeeping);
        if self.due.is_empty() {
            timers
        } else {
            timers.min(self.due_at)
        }
    }

    fn send(&mut self, conn: ConnId, message: Resp) {
        self.outputs.push_back(Output::Signal {
            conn,
            response: signal::response(message),
        });
    }

    fn new_rtc(&self, now: Instant, pc: PcKind) -> Rtc {
        let mut rtc = rtc_config(pc, self.crypto.clone()).build(now);
        for addr in &self.config.local_addrs {
            match Candidate::host(*addr, "udp") {
                Ok(candidate) => {
                    rtc.add_local_candidate(candidate);
                }
                Err(e) => tracing::warn!(%addr, "unusable local candidate: {e}"),
            }
        }
        rtc
    }

    // ------------------------------------------------------------------
    // Joining and leaving
    // ------------------------------------------------------------------

    /// A new, admitted signalling connection.
    pub fn join(&mut self, conn: ConnId, admitted: Admitted, params: JoinParams, now: Instant) {
        let unix_ms = self.unix_ms(now);
        // A new session with the same identity evicts the old one.
        let previous = self.rooms.get(&admitted.room).and_then(|room| {
            room.members.iter().copied().find(|c| {
                self.participants
                    .get(c)
                    .is_some_and(|p| p.identity() == admitted.identity)
            })
        });
        if let Some(old) = previous {
            self.outputs.push_back(Output::Signal {
                conn: old,
                response: signal::leave(
                    proto::DisconnectReason::DuplicateIdentity,
                    proto::leave_request::Action::Disconnect,
                ),
            });
            self.remove(old, proto::DisconnectReason::DuplicateIdentity, now);
        }

        let room_sid = RoomSid::generate(&mut self.rng);
        let room = self
            .rooms
            .entry(admitted.room.clone())
            .or_insert_with(|| Room {
                sid: room_sid,
                creation_ms: unix_ms,
                members: Vec::new(),
            });
        room.members.push(conn);
        let room_proto = proto::Room {
            sid: room.sid.to_string(),
            name: admitted.room.clone(),
            creation_time: room.creation_ms / 1000,
            creation_time_ms: room.creation_ms,
            num_participants: room.members.len() as u32,
            empty_timeout: 300,
            departure_timeout: 20,
            ..Default::default()
        };
        let members = room.members.clone();

        let sid = ParticipantSid::generate(&mut self.rng);
        let info = signal::new_participant_info(sid.as_str(), &admitted, unix_ms, &params);
        let others: Vec<proto::ParticipantInfo> = members
            .iter()
            .filter(|c| **c != conn)
            .filter_map(|c| self.participants.get(c))
            .filter(|p| !p.permission.hidden)
            .map(Participant::snapshot)
            .collect();
        let join = signal::join_response(
            room_proto,
            info.clone(),
            others,
            self.config.ping_interval_secs,
            self.config.ping_timeout_secs,
        );
        self.send(conn, Resp::Join(join));

        let participant = Participant {
            room: admitted.room.clone(),
            info: info.clone(),
            permission: admitted.permission,
            auto_subscribe: params.auto_subscribe,
            last_seen: now,
            publisher: Peer::new(self.new_rtc(now, PcKind::Publisher), now),
            subscriber: Peer::new(self.new_rtc(now, PcKind::Subscriber), now),
            published: Vec::new(),
            unbound_mids: Vec::new(),
            down: Vec::new(),
            sub_offer_id: 0,
            sub_pending: None,
            sub_channels: Channels::default(),
            pub_channels: HashMap::new(),
            reliable_backlog: VecDeque::new(),
            subscribed: HashSet::new(),
            unsubscribed: HashSet::new(),
        };
        // Both new peers are due now.
        self.earliest_timeout = self.earliest_timeout.min(now);
        self.participants.insert(conn, participant);

        if !admitted.permission.hidden {
            self.broadcast(&admitted.room, vec![info], Some(conn));
        }
        self.outputs
            .push_back(Output::Event(MediaEvent::ParticipantJoined {
                room: admitted.room.clone(),
                identity: admitted.identity.clone(),
                sid: sid.to_string(),
            }));
        self.reconcile(conn);
        self.negotiate_subscriber(conn, now);
        self.process(now);
    }

    /// The signalling connection closed (or failed).
    pub fn connection_closed(&mut self, conn: ConnId, now: Instant) {
        if self.participants.contains_key(&conn) {
            self.remove(conn, proto::DisconnectReason::SignalClose, now);
            self.process(now);
        }
    }

    /// Remove a participant, tell the room, and close its connection.
    fn remove(&mut self, conn: ConnId, reason: proto::DisconnectReason, now: Instant) {
        let Some(mut participant) = self.participants.remove(&conn) else {
            return;
        };
        for pc in [PcKind::Publisher, PcKind::Subscriber] {
            participant.peer(pc).with(|rtc| rtc.disconnect());
        }
        self.route_cache.retain(|_, (c, _)| *c != conn);
        let room_name = participant.room.clone();
        if let Some(room) = self.rooms.get_mut(&room_name) {
            room.members.retain(|c| *c != conn);
            if room.members.is_empty() {
                self.rooms.remove(&room_name);
            }
        }
        let mut info = participant.snapshot();
        for track in info.tracks.drain(..) {
            self.outputs
                .push_back(Output::Event(MediaEvent::TrackUnpublished {
                    room: room_name.clone(),
                    identity: info.identity.clone(),
                    track_sid: track.sid,
                }));
        }
        info.state = proto::participant_info::State::Disconnected as i32;
        info.disconnect_reason = reason as i32;
        info.version += 1;
        if !participant.permission.hidden {
            self.broadcast(&room_name, vec![info.clone()], None);
        }
        self.outputs
            .push_back(Output::Event(MediaEvent::ParticipantLeft {
                room: room_name.clone(),
                identity: info.identity.clone(),
                sid: info.sid.clone(),
                reason: reason.as_str_name().to_owned(),
            }));
        self.outputs.push_back(Output::Close { conn });
        self.reconcile_room(&room_name, now);
    }

    fn members(&self, room: &str) -> Vec<ConnId> {
        self.rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    /// Send a ParticipantUpdate to every member of `room` (but `except`).
    fn broadcast(
        &mut self,
        room: &str,
        participants: Vec<proto::ParticipantInfo>,
        except: Option<ConnId>,
    ) {
        for member in self.members(room) {
            if Some(member) == except {
                continue;
            }
            self.send(
                member,
                Resp::Update(proto::ParticipantUpdate {
                    participants: participants.clone(),
                }),
            );
        }
    }

    /// Bump a participant's version and tell the room (hidden: only itself).
    fn announce(&mut self, conn: ConnId) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        participant.info.version += 1;
        let snapshot = participant.snapshot();
        let room = participant.room.clone();
        if participant.permission.hidden {
            self.send(
                conn,
                Resp::Update(proto::ParticipantUpdate {
                    participants: vec![snapshot],
                }),
            );
        } else {
            self.broadcast(&room, vec![snapshot], None);
        }
    }

    // ------------------------------------------------------------------
    // Signalling
    // ------------------------------------------------------------------

    /// A decoded SignalRequest from `conn`.
    pub fn handle_signal(&mut self, conn: ConnId, request: proto::SignalRequest, now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        participant.last_seen = now;
        let Some(message) = request.message else {
            return;
        };
        match message {
            Req::Offer(offer) => self.on_publisher_offer(conn, offer, now),
            Req::Answer(answer) => self.on_subscriber_answer(conn, answer, now),
            Req::Trickle(trickle) => self.on_trickle(conn, trickle, now),
            Req::AddTrack(add) => self.on_add_track(conn, add, now),
            Req::Mute(mute) => {
                self.set_muted(conn, &mute.sid, mute.muted);
            }
            Req::Subscription(update) => self.on_update_subscription(conn, update, now),
            Req::Leave(_) => self.remove(conn, proto::DisconnectReason::ClientInitiated, now),
            Req::Ping(timestamp) => self.send(conn, Resp::Pong(timestamp)),
            Req::PingReq(ping) => {
                let timestamp = self.unix_ms(now);
                self.send(
                    conn,
                    Resp::PongResp(proto::Pong {
                        last_ping_timestamp: ping.timestamp,
                        timestamp,
                    }),
                );
            }
            other => {
                tracing::debug!(
                    ?conn,
                    "ignored signal request: {:?}",
                    std::mem::discriminant(&other)
                );
            }
        }
        self.process(now);
    }

    fn on_publisher_offer(&mut self, conn: ConnId, offer: proto::SessionDescription, now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let parsed = match SdpOffer::from_sdp_string(&offer.sdp) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::info!(?conn, "unparsable publisher offer: {e}");
                self.doomed
                    .push((conn, proto::DisconnectReason::StateMismatch));
                return;
            }
        };
        let answer = participant
            .publisher
            .with(|rtc| rtc.sdp_api().accept_offer(parsed));
        match answer {
            Some(Ok(answer)) => {
                self.send(
                    conn,
                    Resp::Answer(proto::SessionDescription {
                        r#type: "answer".to_owned(),
                        sdp: answer.to_sdp_string(),
                        id: offer.id,
                        mid_to_track_id: HashMap::new(),
                    }),
                );
            }
            Some(Err(e)) => {
                tracing::info!(?conn, "publisher offer refused: {e}");
                self.doomed
                    .push((conn, proto::DisconnectReason::StateMismatch));
                return;
            }
            None => {
                self.doomed
                    .push((conn, proto::DisconnectReason::StateMismatch));
                return;
            }
        }
        self.drain(conn, PcKind::Publisher, now);
        self.process(now);
        self.check_unpublished(conn, now);
    }

    fn on_subscriber_answer(
        &mut self,
        conn: ConnId,
        answer: proto::SessionDescription,
        now: Instant,
    ) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let Some(pending) = participant.sub_pending.take() else {
            tracing::debug!(?conn, "subscriber answer without an outstanding offer");
            return;
        };
        let parsed = match SdpAnswer::from_sdp_string(&answer.sdp) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::info!(?conn, "unparsable subscriber answer: {e}");
                self.doomed
                    .push((conn, proto::DisconnectReason::StateMismatch));
                return;
            }
        };
        let result = participant
            .subscriber
            .with(|rtc| rtc.sdp_api().accept_answer(pending, parsed));
        if !matches!(result, Some(Ok(()))) {
            tracing::info!(?conn, "subscriber answer refused");
            self.doomed
                .push((conn, proto::DisconnectReason::StateMismatch));
            return;
        }
        for down in &mut participant.down {
            down.payload_types = None;
            if let DownState::Negotiating(mid) = down.state {
                down.state = DownState::Open(mid);
                down.forwarder.restart();
            }
        }
        participant
            .down
            .retain(|d| !matches!(d.state, DownState::NegotiatingStop(_)));
        self.drain(conn, PcKind::Subscriber, now);
        self.negotiate_subscriber(conn, now);
    }

    fn on_trickle(&mut self, conn: ConnId, trickle: proto::TrickleRequest, now: Instant) {
        let line = match signal::parse_trickle(&trickle.candidate_init) {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(?conn, "{e}");
                return;
            }
        };
        let candidate = match Candidate::from_sdp_string(&line) {
            Ok(candidate) => candidate,
            Err(e) => {
                tracing::debug!(?conn, "unusable remote candidate {line:?}: {e}");
                return;
            }
        };
        let pc = if trickle.target == proto::SignalTarget::Subscriber as i32 {
            PcKind::Subscriber
        } else {
            PcKind::Publisher
        };
        if let Some(participant) = self.participants.get_mut(&conn) {
            participant
                .peer(pc)
                .with(|rtc| rtc.add_remote_candidate(candidate));
        }
        self.drain(conn, pc, now);
    }

    fn on_add_track(&mut self, conn: ConnId, add: proto::AddTrackRequest, now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        if !participant.permission.can_publish {
            tracing::info!(?conn, "refused AddTrackRequest: no publish permission");
            return;
        }
        if let Some(existing) = participant.published.iter().find(|t| t.cid == add.cid) {
            let info = existing.info.clone();
            self.send(
                conn,
                Resp::TrackPublished(proto::TrackPublishedResponse {
                    cid: add.cid,
                    track: Some(info),
                }),
            );
            return;
        }
        if participant.published.len() >= MAX_TRACKS_PER_PARTICIPANT {
            tracing::info!(?conn, "refused AddTrackRequest: too many tracks");
            return;
        }
        let kind = if add.r#type == proto::TrackType::Video as i32 {
            MediaKind::Video
        } else if add.r#type == proto::TrackType::Audio as i32 {
            MediaKind::Audio
        } else {
            tracing::debug!(?conn, "ignored AddTrackRequest of type {}", add.r#type);
            return;
        };
        let sid = TrackSid::generate(&mut self.rng);
        let info = signal::track_info_from_request(&add, sid.as_str());
        self.next_track_key += 1;
        participant.published.push(Published {
            sid,
            key: TrackKey(self.next_track_key),
            cid: add.cid.chars().take(256).collect(),
            kind,
            mid: None,
            info: info.clone(),
            layers: LayerSet::default(),
            keyframe_requests: Vec::new(),
        });
        self.send(
            conn,
            Resp::TrackPublished(proto::TrackPublishedResponse {
                cid: add.cid,
                track: Some(info),
            }),
        );
        // Media may have been negotiated before the AddTrackRequest.
        let unbound = std::mem::take(
            &mut self
                .participants
                .get_mut(&conn)
                .expect("present")
                .unbound_mids,
        );
        for (mid, kind) in unbound {
            self.bind_media(conn, mid, kind, now);
        }
    }

    fn set_muted(&mut self, conn: ConnId, track_sid: &str, muted: bool) -> bool {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return false;
        };
        let Some(track) = participant
            .published
            .iter_mut()
            .find(|t| t.sid.as_str() == track_sid)
        else {
            return false;
        };
        if track.info.muted != muted {
            track.info.muted = muted;
            if track.mid.is_some() {
                self.announce(conn);
            }
        }
        true
    }

    fn on_update_subscription(
        &mut self,
        conn: ConnId,
        update: proto::UpdateSubscription,
        now: Instant,
    ) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let sids = update
            .track_sids
            .iter()
            .chain(
                update
                    .participant_tracks
                    .iter()
                    .flat_map(|pt| pt.track_sids.iter()),
            )
            .take(1024);
        for sid in sids {
            if update.subscribe {
                participant.unsubscribed.remove(sid);
                participant.subscribed.insert(sid.clone());
            } else {
                participant.subscribed.remove(sid);
                participant.unsubscribed.insert(sid.clone());
            }
        }
        self.reconcile(conn);
        self.negotiate_subscriber(conn, now);
    }

    // ------------------------------------------------------------------
    // Publishing and subscriptions
    // ------------------------------------------------------------------

    /// A media section appeared on `conn`'s publisher: attach it to a track.
    fn bind_media(&mut self, conn: ConnId, mid: Mid, kind: MediaKind, now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let track_id = participant
            .publisher
            .with(|rtc| rtc.media(mid).map(|m| m.track_id().to_owned()))
            .flatten()
            .unwrap_or_default();
        tracing::debug!(?conn, %mid, ?kind, track_id, "publisher media section");
        let unbound = |t: &&mut Published| t.mid.is_none() && t.kind == kind;
        let index = participant
            .published
            .iter_mut()
            .position(|t| t.mid.is_none() && t.kind == kind && t.cid == track_id)
            .or_else(|| participant.published.iter_mut().position(|t| unbound(&t)));
        let Some(index) = index else {
            participant.unbound_mids.push((mid, kind));
            return;
        };
        let track = &mut participant.published[index];
        track.mid = Some(mid);
        track.info.mid = mid.to_string();
        let event = MediaEvent::TrackPublished {
            room: participant.room.clone(),
            identity: participant.info.identity.clone(),
            track_sid: track.sid.to_string(),
            kind: if kind == MediaKind::Video {
                "video"
            } else {
                "audio"
            }
            .to_owned(),
            source: proto::TrackSource::try_from(track.info.source)
                .unwrap_or(proto::TrackSource::Unknown)
                .as_str_name()
                .to_owned(),
        };
        let room = participant.room.clone();
        self.outputs.push_back(Output::Event(event));
        // Announce before any subscriber offer carries the track.
        self.announce(conn);
        self.reconcile_room(&room, now);
    }

    /// After a publisher renegotiation: tracks whose m-line no longer
    /// receives are unpublished.
    fn check_unpublished(&mut self, conn: ConnId, now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let mut gone = Vec::new();
        for track in &participant.published {
            let Some(mid) = track.mid else { continue };
            let receiving = participant
                .publisher
                .with(|rtc| {
                    rtc.media(mid)
                        .is_some_and(|m| !m.disabled() && m.direction().is_receiving())
                })
                .unwrap_or(false);
            if !receiving {
                gone.push(track.sid.to_string());
            }
        }
        if !gone.is_empty() {
            self.unpublish(conn, &gone, false, now);
        }
    }

    /// Remove published tracks; `notify_publisher` tells the client its track was unpublished.
    fn unpublish(
        &mut self,
        conn: ConnId,
        track_sids: &[String],
        notify_publisher: bool,
        now: Instant,
    ) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let room = participant.room.clone();
        let identity = participant.info.identity.clone();
        let mut removed = Vec::new();
        participant.published.retain(|t| {
            if track_sids.iter().any(|s| s == t.sid.as_str()) {
                removed.push((t.sid.to_string(), t.mid.is_some()));
                false
            } else {
                true
            }
        });
        for (track_sid, announced) in &removed {
            if notify_publisher {
                self.send(
                    conn,
                    Resp::TrackUnpublished(proto::TrackUnpublishedResponse {
                        track_sid: track_sid.clone(),
                    }),
                );
            }
            if *announced {
                self.outputs
                    .push_back(Output::Event(MediaEvent::TrackUnpublished {
                        room: room.clone(),
                        identity: identity.clone(),
                        track_sid: track_sid.clone(),
                    }));
            }
        }
        if !removed.is_empty() {
            self.announce(conn);
            self.reconcile_room(&room, now);
        }
    }

    fn reconcile_room(&mut self, room: &str, now: Instant) {
        for member in self.members(room) {
            self.reconcile(member);
            self.negotiate_subscriber(member, now);
        }
    }

    /// Bring `conn`'s down tracks in line with what it wants and may have.
    fn reconcile(&mut self, conn: ConnId) {
        let Some(participant) = self.participants.get(&conn) else {
            return;
        };
        // Every announced track of the other members of the room.
        let mut available: Vec<(String, TrackKey, ConnId, String, MediaKind)> = Vec::new();
        for member in self.members(&participant.room) {
            if member == conn {
                continue;
            }
            if let Some(other) = self.participants.get(&member) {
                for track in other.published.iter().filter(|t| t.mid.is_some()) {
                    available.push((
                        track.sid.to_string(),
                        track.key,
                        member,
                        other.info.sid.clone(),
                        track.kind,
                    ));
                }
            }
        }
        let participant = self.participants.get_mut(&conn).expect("checked above");
        let wanted: Vec<_> = available
            .into_iter()
            .filter(|(sid, ..)| participant.wants(sid))
            .collect();
        participant.down.retain_mut(|down| {
            let keep = wanted.iter().any(|(sid, ..)| *sid == down.track_sid);
            if keep {
                return true;
            }
            match down.state {
                DownState::ToOpen => false,
                DownState::Negotiating(mid) | DownState::Open(mid) => {
                    down.state = DownState::ToStop(mid);
                    true
                }
                DownState::ToStop(_) | DownState::NegotiatingStop(_) => true,
            }
        });
        for (sid, source_key, source, source_sid, kind) in wanted {
            let present = participant.down.iter().any(|d| {
                d.track_sid == sid
                    && !matches!(
                        d.state,
                        DownState::ToStop(_) | DownState::NegotiatingStop(_)
                    )
            });
            if !present {
                participant.down.push(DownTrack {
                    track_sid: sid,
                    source,
                    source_key,
                    source_sid,
                    kind,
                    state: DownState::ToOpen,
                    forwarder: LayerForwarder::new(kind == MediaKind::Video),
                    seq: SeqRewriter::default(),
                    vp8: Vp8Rewriter::default(),
                    payload_types: None,
                });
            }
        }
    }

    /// Send a subscriber offer if anything changed and none is outstanding.
    fn negotiate_subscriber(&mut self, conn: ConnId, now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        if participant.sub_pending.is_some() {
            return; // queued: runs again when the answer arrives
        }
        let first = participant.sub_offer_id == 0;
        let Participant {
            subscriber,
            down,
            sub_channels,
            ..
        } = participant;
        let applied = subscriber.with(|rtc| {
            let mut api = rtc.sdp_api();
            if first {
                let [reliable, lossy] = subscriber_channels();
                sub_channels.reliable = Some(api.add_channel_with_config(reliable));
                sub_channels.lossy = Some(api.add_channel_with_config(lossy));
            }
            for track in down.iter_mut() {
                match track.state {
                    DownState::ToOpen => {
                        let stream_id = format!("{}|{}", track.source_sid, track.track_sid);
                        let mid = api.add_media(
                            track.kind,
                            Direction::SendOnly,
                            Some(stream_id),
                            Some(track.track_sid.clone()),
                            None,
                        );
                        track.state = DownState::Negotiating(mid);
                    }
                    DownState::ToStop(mid) => {
                        api.stop_media(mid);
                        track.state = DownState::NegotiatingStop(mid);
                    }
                    _ => {}
                }
            }
            if !api.has_changes() {
                return None;
            }
            api.apply()
        });
        let Some(Some((offer, pending))) = applied else {
            if applied.is_none() {
                self.doomed
                    .push((conn, proto::DisconnectReason::StateMismatch));
            }
            return;
        };
        participant.sub_pending = Some(pending);
        participant.sub_offer_id += 1;
        let mid_to_track_id = participant
            .down
            .iter()
            .filter_map(|d| match d.state {
                DownState::Negotiating(mid) | DownState::Open(mid) => {
                    Some((mid.to_string(), d.track_sid.clone()))
                }
                _ => None,
            })
            .collect();
        let id = participant.sub_offer_id;
        self.send(
            conn,
            Resp::Offer(proto::SessionDescription {
                r#type: "offer".to_owned(),
                sdp: offer.to_sdp_string(),
                id,
                mid_to_track_id,
            }),
        );
        self.drain(conn, PcKind::Subscriber, now);
    }

    // ------------------------------------------------------------------
    // Network input and time
    // ------------------------------------------------------------------

    /// A datagram arrived at local address `destination` from `source`.
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let Ok(contents) = bytes.try_into() else {
            return; // not STUN, DTLS, RTP or RTCP
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        let mut target = self.route_cache.get(&source).copied().filter(|(conn, pc)| {
            self.participants
                .get_mut(conn)
                .and_then(|p| p.peer(*pc).with(|rtc| rtc.accepts(&input)))
                .unwrap_or(false)
        });
        if target.is_none() {
            'scan: for (conn, participant) in self.participants.iter_mut() {
                for pc in [PcKind::Publisher, PcKind::Subscriber] {
                    if participant.peer(pc).with(|rtc| rtc.accepts(&input)) == Some(true) {
                        target = Some((*conn, pc));
                        break 'scan;
                    }
                }
            }
            if let Some(found) = target {
                self.route_cache.insert(source, found);
            }
        }
        let Some((conn, pc)) = target else {
            return;
        };
        let participant = self.participants.get_mut(&conn).expect("found above");
        match participant.peer(pc).with(|rtc| rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::debug!(?conn, ?pc, "input refused: {e}"),
            None => {}
        }
        self.drain(conn, pc, now);
        self.process(now);
    }

    /// Time passed: drive str0m timers, keepalive checks and housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (conn, pc) in std::mem::take(&mut self.due) {
            if let Some(participant) = self.participants.get_mut(&conn) {
                participant.peer(pc).due = false;
                self.run_timers(conn, pc, now);
            }
        }
        if now >= self.earliest_timeout {
            // A full pass: run what is due and find the exact earliest of the rest.
            self.earliest_timeout = now + Duration::from_secs(3600);
            let mut due = Vec::new();
            for (conn, p) in &self.participants {
                for (pc, peer) in [
                    (PcKind::Publisher, &p.publisher),
                    (PcKind::Subscriber, &p.subscriber),
                ] {
                    if peer.rtc.is_none() {
                        continue;
                    }
                    if peer.next_timeout <= now {
                        due.push((*conn, pc));
                    } else {
                        self.earliest_timeout = self.earliest_timeout.min(peer.next_timeout);
                    }
                }
            }
            for (conn, pc) in due {
                self.run_timers(conn, pc, now);
            }
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            let timeout = Duration::from_secs(self.config.ping_timeout_secs.max(1) as u64);
            for (conn, participant) in &self.participants {
                if now.saturating_duration_since(participant.last_seen) > timeout {
                    self.doomed
                        .push((*conn, proto::DisconnectReason::ConnectionTimeout));
                } else if !participant.publisher.alive() || !participant.subscriber.alive() {
                    self.doomed
                        .push((*conn, proto::DisconnectReason::MediaFailure));
                }
            }
        }
        self.process(now);
    }

    /// Let str0m's timers of `pc` of `conn` run, then poll it.
    fn run_timers(&mut self, conn: ConnId, pc: PcKind, now: Instant) {
        if let Some(participant) = self.participants.get_mut(&conn) {
            let result = participant
                .peer(pc)
                .with(|rtc| rtc.handle_input(Input::Timeout(now)));
            if let Some(Err(e)) = result {
                tracing::debug!(?conn, ?pc, "timeout handling failed: {e}");
            }
        }
        self.drain(conn, pc, now);
    }

    /// Poll `pc` of `conn` until str0m reports its next timeout.
    fn drain(&mut self, conn: ConnId, pc: PcKind, _now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let peer = participant.peer(pc);
        let outputs = &mut self.outputs;
        let events = &mut self.events;
        let result = peer.with(|rtc| {
            loop {
                match rtc.poll_output() {
                    Ok(RtcOutput::Timeout(at)) => break Ok(at),
                    Ok(RtcOutput::Transmit(transmit)) => outputs.push_back(Output::Transmit {
                        source: transmit.source,
                        destination: transmit.destination,
                        contents: transmit.contents.into(),
                    }),
                    Ok(RtcOutput::Event(event)) => events.push_back((conn, pc, event)),
                    Err(e) => {
                        rtc.disconnect();
                        break Err(e);
                    }
                }
            }
        });
        match result {
            Some(Ok(at)) => {
                peer.next_timeout = at;
                self.earliest_timeout = self.earliest_timeout.min(at);
            }
            Some(Err(e)) => {
                tracing::info!(?conn, ?pc, "peer connection failed: {e}");
                self.doomed
                    .push((conn, proto::DisconnectReason::MediaFailure));
            }
            None => self
                .doomed
                .push((conn, proto::DisconnectReason::MediaFailure)),
        }
    }

    /// Handle queued str0m events until none are left, then drop doomed participants.
    fn process(&mut self, now: Instant) {
        loop {
            while let Some((conn, pc, event)) = self.events.pop_front() {
                if self.participants.contains_key(&conn) {
                    self.on_rtc_event(conn, pc, event, now);
                }
            }
            if self.doomed.is_empty() {
                break;
            }
            for (conn, reason) in std::mem::take(&mut self.doomed) {
                if self.participants.contains_key(&conn) {
                    self.outputs.push_back(Output::Signal {
                        conn,
                        response: signal::leave(reason, proto::leave_request::Action::Disconnect),
                    });
                    self.remove(conn, reason, now);
                }
            }
        }
    }

    fn on_rtc_event(&mut self, conn: ConnId, pc: PcKind, event: Event, now: Instant) {
        match (pc, event) {
            // Only sections the client sends on carry a published track.
            (PcKind::Publisher, Event::MediaAdded(added)) if added.direction.is_receiving() => {
                self.bind_media(conn, added.mid, added.kind, now)
            }
            (PcKind::Publisher, Event::RtpPacket(packet)) => self.on_rtp(conn, packet, now),
            (PcKind::Subscriber, Event::KeyframeRequest(request)) => {
                let Some(participant) = self.participants.get(&conn) else {
                    return;
                };
                let Some(down) = participant
                    .down
                    .iter()
                    .find(|d| d.state.mid() == Some(request.mid))
                else {
                    return;
                };
                let rid = down.forwarder.current().flatten();
                let (source, key) = (down.source, down.source_key);
                self.request_keyframe(source, key, rid, now);
            }
            (PcKind::Subscriber, Event::Connected) => {
                let active = proto::participant_info::State::Active as i32;
                if let Some(participant) = self.participants.get_mut(&conn)
                    && participant.info.state != active
                {
                    participant.info.state = active;
                    self.announce(conn);
                }
            }
            (PcKind::Subscriber, Event::ChannelOpen(id, _label)) => {
                let Some(participant) = self.participants.get_mut(&conn) else {
                    return;
                };
                if participant.sub_channels.reliable == Some(id) {
                    participant.sub_channels.reliable_open = true;
                    let backlog = std::mem::take(&mut participant.reliable_backlog);
                    for bytes in backlog {
                        participant
                            .subscriber
                            .with(|rtc| rtc.channel(id).map(|mut ch| ch.write(true, &bytes)));
                    }
                    self.drain(conn, PcKind::Subscriber, now);
                } else if participant.sub_channels.lossy == Some(id) {
                    participant.sub_channels.lossy_open = true;
                }
            }
            (PcKind::Publisher, Event::ChannelOpen(id, label)) => {
                if let Some(participant) = self.participants.get_mut(&conn)
                    && participant.pub_channels.len() < 16
                {
                    participant.pub_channels.insert(id, label);
                }
            }
            (PcKind::Publisher, Event::ChannelData(data)) => {
                let kind = match self
                    .participants
                    .get(&conn)
                    .and_then(|p| p.pub_channels.get(&data.id))
                    .map(String::as_str)
                {
                    Some("_reliable") => DataKind::Reliable,
                    Some("_lossy") => DataKind::Lossy,
                    _ => return,
                };
                if data.binary && data.data.len() <= MAX_DATA_PACKET_BYTES {
                    self.on_client_data(conn, kind, &data.data, now);
                }
            }
            (_, Event::IceConnectionStateChange(state)) => {
                tracing::debug!(?conn, ?pc, ?state, "ice state");
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------------
    // Media forwarding
    // ------------------------------------------------------------------

    fn on_rtp(&mut self, conn: ConnId, packet: RtpPacket, now: Instant) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        // The receive stream it came on names its section and simulcast layer.
        let ssrc = packet.header.ssrc;
        let pt = packet.header.payload_type;
        let found = participant.publisher.with(|rtc| {
            let params = *rtc.codec_config().params().iter().find(|p| p.pt() == pt)?;
            let mut api = rtc.direct_api();
            let stream = api.stream_rx(&ssrc)?;
            Some((stream.mid(), stream.rid(), params))
        });
        let Some(Some((mid, rid, params))) = found else {
            return;
        };
        let Some(track) = participant
            .published
            .iter_mut()
            .find(|t| t.mid == Some(mid))
        else {
            tracing::trace!(?conn, %mid, "media for an unknown mid");
            return;
        };
        track.layers.saw(rid, now);
        let target = track.layers.best(now).unwrap_or(rid);
        let key = track.key;
        let video = track.kind == MediaKind::Video;
        let payload = &packet.payload;
        let vp8 = match params.spec().codec {
            Codec::Vp8 => Vp8Descriptor::parse(payload).ok(),
            _ => None,
        };
        let keyframe = starts_keyframe(params.spec().codec, payload, vp8.as_ref());
        let ids = vp8.map(|d| Vp8Ids {
            picture_id: d.picture_id(),
            tl0_pic_idx: d.tl0_pic_idx(),
        });
        let frame = FrameMeta {
            rid,
            time: packet.time.numer(),
            clock_rate: packet.time.frequency().get(),
            wallclock: packet.timestamp,
            keyframe,
        };
        let seq = *packet.seq_no;
        // What a subscriber may hear of the publisher's extensions (str0m adds its own).
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let Some(room) = self.rooms.get(&participant.room) else {
            return;
        };
        let mut keyframe_wanted: Option<Option<Rid>> = None;
        for &member in &room.members {
            if member == conn {
                continue;
            }
            let Some(subscriber) = self.participants.get_mut(&member) else {
                continue;
            };
            let Some(down) = subscriber
                .down
                .iter_mut()
                .find(|d| d.source == conn && d.source_key == key)
            else {
                continue;
            };
            let DownState::Open(out_mid) = down.state else {
                continue;
            };
            let before = down.forwarder.current();
            let verdict = down.forwarder.on_frame(frame, target);
            let time = match verdict {
                Verdict::Forward(time) => time,
                Verdict::NeedKeyframe(rid) => {
                    keyframe_wanted = Some(rid);
                    continue;
                }
                Verdict::Drop => continue,
            };
            if down.forwarder.current() != before {
                down.seq.start(seq);
                if let Some(ids) = ids {
                    down.vp8.start(ids);
                }
            }
            let Some(out_seq) = down.seq.rewrite(seq) else {
                continue;
            };
            let patch = ids
                .and_then(|ids| down.vp8.rewrite(ids))
                .zip(vp8)
                .and_then(|(out, descriptor)| out.patch(&descriptor));
            let written = subscriber.subscriber.with(|rtc| {
                let out_pt = match down.payload_types {
                    Some((incoming, outgoing)) if incoming == pt => outgoing,
                    _ => {
                        let outgoing = rtc.codec_config().match_params(params)?.pt();
                        down.payload_types = Some((pt, outgoing));
                        outgoing
                    }
                };
                let mut api = rtc.direct_api();
                let stream = api.stream_tx_by_mid(out_mid, None)?;
                let mut write = RtpWrite::new(
                    out_pt,
                    out_seq.into(),
                    time as u32,
                    packet.timestamp,
                    payload.clone(),
                )
                .marker(packet.header.marker)
                .ext_vals(ext_vals.clone())
                .nackable(video);
                if let Some(patch) = patch {
                    write = write.vp8_patch(patch);
                }
                stream.write_rtp(write);
                Some(())
            });
            if written == Some(None) {
                tracing::debug!(?member, %out_mid, "no send stream or matching codec");
            }
            // str0m sends written packets when its timers run: the subscriber is due now, and
            // every packet written to it this turn goes out in one timer pass and one drain.
            if !subscriber.subscriber.due {
                subscriber.subscriber.due = true;
                if self.due.is_empty() {
                    self.due_at = now;
                }
                self.due.push((member, PcKind::Subscriber));
            }
        }
        if let Some(rid) = keyframe_wanted {
            self.request_keyframe(conn, key, rid, now);
        }
    }

    /// Ask the publisher of track `key` for a keyframe of layer `rid` (throttled).
    fn request_keyframe(&mut self, source: ConnId, key: TrackKey, rid: Option<Rid>, now: Instant) {
        let Some(participant) = self.participants.get_mut(&source) else {
            return;
        };
        let Some(track) = participant.published.iter_mut().find(|t| t.key == key) else {
            return;
        };
        let (Some(mid), MediaKind::Video) = (track.mid, track.kind) else {
            return;
        };
        match track.keyframe_requests.iter_mut().find(|(r, _)| *r == rid) {
            Some((_, at)) if now.saturating_duration_since(*at) < KEYFRAME_REQUEST_INTERVAL => {
                return;
            }
            Some((_, at)) => *at = now,
            None => track.keyframe_requests.push((rid, now)),
        }
        let requested = participant.publisher.with(|rtc| {
            rtc.direct_api()
                .stream_rx_by_mid(mid, rid)
                .map(|stream| stream.request_keyframe(KeyframeRequestKind::Pli))
                .is_some()
        });
        if requested == Some(false) {
            tracing::debug!(?source, %mid, ?rid, "keyframe request: no such stream");
        }
        self.drain(source, PcKind::Publisher, now);
    }

    // ------------------------------------------------------------------
    // Data packets
    // ------------------------------------------------------------------

    fn on_client_data(&mut self, conn: ConnId, kind: DataKind, bytes: &[u8], now: Instant) {
        let Some(participant) = self.participants.get(&conn) else {
            return;
        };
        if !participant.permission.can_publish_data {
            return;
        }
        let Ok(mut packet) = proto::DataPacket::decode(bytes) else {
            tracing::debug!(?conn, "undecodable data packet");
            return;
        };
        let (identity, sid, room) = (
            participant.identity().to_owned(),
            participant.sid().to_owned(),
            participant.room.clone(),
        );
        self.route_packet(&room, &mut packet, kind, &identity, &sid, now);
    }

    fn route_packet(
        &mut self,
        room: &str,
        packet: &mut proto::DataPacket,
        kind: DataKind,
        sender_identity: &str,
        sender_sid: &str,
        now: Instant,
    ) {
        let members = self.members(room);
        let identities: Vec<(ConnId, String)> = members
            .iter()
            .filter_map(|c| {
                self.participants
                    .get(c)
                    .map(|p| (*c, p.identity().to_owned()))
            })
            .collect();
        let names: Vec<&str> = identities.iter().map(|(_, i)| i.as_str()).collect();
        let recipients = signal::route_data(packet, sender_identity, sender_sid, &names);
        let encoded = packet.encode_to_vec();
        for (member, identity) in &identities {
            if !recipients.contains(identity) {
                continue;
            }
            let Some(participant) = self.participants.get_mut(member) else {
                continue;
            };
            let channels = &participant.sub_channels;
            let (id, open) = match kind {
                DataKind::Reliable => (channels.reliable, channels.reliable_open),
                DataKind::Lossy => (channels.lossy, channels.lossy_open),
            };
            match (id, open) {
                (Some(id), true) => {
                    participant
                        .subscriber
                        .with(|rtc| rtc.channel(id).map(|mut ch| ch.write(true, &encoded)));
                    self.drain(*member, PcKind::Subscriber, now);
                }
                _ if kind == DataKind::Reliable
                    && participant.reliable_backlog.len() < MAX_RELIABLE_BACKLOG =>
                {
                    participant.reliable_backlog.push_back(encoded.clone());
                }
                _ => {}
            }
        }
    }

    // ------------------------------------------------------------------
    // Control (moderation, RoomService)
    // ------------------------------------------------------------------

    fn find(&self, room: &str, identity: &str) -> Result<ConnId, SfuError> {
        let room_state = self
            .rooms
            .get(room)
            .ok_or_else(|| SfuError::NotFound(format!("room {room}")))?;
        room_state
            .members
            .iter()
            .copied()
            .find(|c| {
                self.participants
                    .get(c)
                    .is_some_and(|p| p.identity() == identity)
            })
            .ok_or_else(|| SfuError::NotFound(format!("participant {identity}")))
    }

    /// Send `leave{DISCONNECT}` and close.
    pub fn remove_participant(
        &mut self,
        room: &str,
        identity: &str,
        reason: proto::DisconnectReason,
        now: Instant,
    ) -> Result<(), SfuError> {
        let conn = self.find(room, identity)?;
        self.outputs.push_back(Output::Signal {
            conn,
            response: signal::leave(reason, proto::leave_request::Action::Disconnect),
        });
        self.remove(conn, reason, now);
        self.process(now);
        Ok(())
    }

    /// Change a participant's permission live.
    pub fn update_permission(
        &mut self,
        room: &str,
        identity: &str,
        permission: Permission,
        now: Instant,
    ) -> Result<(), SfuError> {
        let conn = self.find(room, identity)?;
        let participant = self.participants.get_mut(&conn).expect("found");
        let was_hidden = participant.permission.hidden;
        participant.permission = permission;
        participant.info.permission = Some(signal::permission_to_proto(permission));
        let revoked: Vec<String> = if permission.can_publish {
            Vec::new()
        } else {
            participant
                .published
                .iter()
                .map(|t| t.sid.to_string())
                .collect()
        };
        if !revoked.is_empty() {
            self.unpublish(conn, &revoked, true, now);
        }
        self.announce(conn);
        if was_hidden && !permission.hidden {
            // Now visible: others learn about it through the broadcast above.
        }
        self.reconcile(conn);
        self.negotiate_subscriber(conn, now);
        self.process(now);
        Ok(())
    }

    /// Server-initiated mute of a published track.
    pub fn mute_published_track(
        &mut self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
        now: Instant,
    ) -> Result<proto::TrackInfo, SfuError> {
        let conn = self.find(room, identity)?;
        if !self.set_muted(conn, track_sid, muted) {
            return Err(SfuError::NotFound(format!("track {track_sid}")));
        }
        self.send(
            conn,
            Resp::Mute(proto::MuteTrackRequest {
                sid: track_sid.to_owned(),
                muted,
            }),
        );
        self.process(now);
        let participant = self.participants.get(&conn).expect("found");
        Ok(participant
            .published
            .iter()
            .find(|t| t.sid.as_str() == track_sid)
            .map(|t| t.info.clone())
            .unwrap_or_default())
    }

    /// Disconnect everyone in `room`.
    pub fn close_room(&mut self, room: &str, now: Instant) -> Result<(), SfuError> {
        if !self.rooms.contains_key(room) {
            return Err(SfuError::NotFound(format!("room {room}")));
        }
        for conn in self.members(room) {
            self.outputs.push_back(Output::Signal {
                conn,
                response: signal::leave(
                    proto::DisconnectReason::RoomDeleted,
                    proto::leave_request::Action::Disconnect,
                ),
            });
            self.remove(conn, proto::DisconnectReason::RoomDeleted, now);
        }
        self.process(now);
        Ok(())
    }

    /// Disconnect everyone everywhere (shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            for conn in self.members(&room) {
                self.outputs.push_back(Output::Signal {
                    conn,
                    response: signal::leave(
                        proto::DisconnectReason::ServerShutdown,
                        proto::leave_request::Action::Disconnect,
                    ),
                });
                self.remove(conn, proto::DisconnectReason::ServerShutdown, now);
            }
        }
        self.process(now);
    }

    pub fn list_rooms(&self) -> Vec<RoomSummary> {
        self.rooms
            .iter()
            .map(|(name, room)| RoomSummary {
                name: name.clone(),
                sid: room.sid.to_string(),
                num_participants: room.members.len() as u32,
                num_publishers: room
                    .members
                    .iter()
                    .filter_map(|c| self.participants.get(c))
                    .filter(|p| p.published.iter().any(|t| t.mid.is_some()))
                    .count() as u32,
                creation_time_ms: room.creation_ms,
            })
            .collect()
    }

    pub fn list_participants(&self, room: &str) -> Result<Vec<proto::ParticipantInfo>, SfuError> {
        let room_state = self
            .rooms
            .get(room)
            .ok_or_else(|| SfuError::NotFound(format!("room {room}")))?;
        Ok(room_state
            .members
            .iter()
            .filter_map(|c| self.participants.get(c))
            .map(Participant::snapshot)
            .collect())
    }

    pub fn get_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<proto::ParticipantInfo, SfuError> {
        let conn = self.find(room, identity)?;
        Ok(self.participants[&conn].snapshot())
    }

    /// Change name, metadata, attributes and/or permission; broadcast the result.
    #[allow(clippy::too_many_arguments)]
    pub fn update_participant(
        &mut self,
        room: &str,
        identity: &str,
        name: Option<String>,
        metadata: Option<String>,
        attributes: Option<HashMap<String, String>>,
        permission: Option<Permission>,
        now: Instant,
    ) -> Result<proto::ParticipantInfo, SfuError> {
        let conn = self.find(room, identity)?;
        let participant = self.participants.get_mut(&conn).expect("found");
        if let Some(name) = name {
            participant.info.name = name;
        }
        if let Some(metadata) = metadata {
            participant.info.metadata = metadata;
        }
        if let Some(attributes) = attributes {
            for (key, value) in attributes {
                if value.is_empty() {
                    participant.info.attributes.remove(&key);
                } else {
                    participant.info.attributes.insert(key, value);
                }
            }
        }
        match permission {
            Some(permission) => self.update_permission(room, identity, permission, now)?,
            None => {
                self.announce(conn);
                self.process(now);
            }
        }
        self.get_participant(room, identity)
    }

    /// Server-originated data to a room (all, or `destination_identities`).
    pub fn send_data(
        &mut self,
        room: &str,
        payload: Vec<u8>,
        kind: DataKind,
        destination_identities: Vec<String>,
        topic: Option<String>,
        now: Instant,
    ) -> Result<(), SfuError> {
        if !self.rooms.contains_key(room) {
            return Err(SfuError::NotFound(format!("room {room}")));
        }
        let mut packet = proto::DataPacket {
            kind: match kind {
                DataKind::Reliable => proto::data_packet::Kind::Reliable as i32,
                DataKind::Lossy => proto::data_packet::Kind::Lossy as i32,
            },
            destination_identities: destination_identities.clone(),
            value: Some(proto::data_packet::Value::User(proto::UserPacket {
                payload,
                topic,
                destination_identities,
                ..Default::default()
            })),
            ..Default::default()
        };
        self.route_packet(room, &mut packet, kind, "", "", now);
        self.process(now);
        Ok(())
    }

    /// Number of participants across all rooms (tests, metrics).
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }
}

/// The str0m configuration of a participant's publisher or subscriber connection (public so that
/// the media benchmark's str0m floor runs exactly what the engine runs).
pub fn rtc_config(pc: PcKind, crypto: Arc<CryptoProvider>) -> RtcConfig {
    let extensions = match pc {
        PcKind::Publisher => ExtensionMap::standard(),
        PcKind::Subscriber => subscriber_extensions(),
    };
    Rtc::builder()
        // Packets are forwarded as they come, rewritten, not reassembled into frames and
        // packetized again for each subscriber.
        .set_rtp_mode(true)
        .set_extension_map(extensions)
        .set_crypto_provider(crypto)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .enable_h264(true)
}

/// The data channels convene opens on a subscriber connection, as LiveKit clients expect them:
/// `_reliable` (ordered, retransmitted) and `_lossy` (unordered, never retransmitted).
pub fn subscriber_channels() -> [ChannelConfig; 2] {
    let channel = |label: &str, ordered, reliability| ChannelConfig {
        label: label.to_owned(),
        ordered,
        reliability,
        negotiated: None,
        protocol: String::new(),
    };
    [
        channel("_reliable", true, Reliability::Reliable),
        channel(
            "_lossy",
            false,
            Reliability::MaxRetransmits { retransmits: 0 },
        ),
    ]
}

/// The RTP header extensions of a subscriber connection: str0m's standard set without the two
/// that exist for the sender's bandwidth estimation (transport-wide sequence numbers and
/// abs-send-time). convene estimates no downstream bandwidth, and with them every forwarded packet
/// is numbered and every subscriber sends feedback that must be decrypted and parsed: about a
/// tenth of the forwarding CPU for nothing. Publisher connections keep them: a browser's own
/// upstream bandwidth estimation lives on the feedback convene sends.
fn subscriber_extensions() -> ExtensionMap {
    let mut extensions = ExtensionMap::empty();
    for (id, extension) in ExtensionMap::standard().iter() {
        if !matches!(
            extension,
            Extension::TransportSequenceNumber | Extension::AbsoluteSendTime
        ) {
            extensions.set(id, extension.clone());
        }
    }
    extensions
}

#[cfg(test)]
mod tests;
