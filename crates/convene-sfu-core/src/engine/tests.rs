//! Engine tests: signalling, permissions, keepalive and hostile input, driven with time passed in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use str0m::media::{Direction, MediaKind};

use super::{
    Answer, ConnId, DataKind, Engine, EngineConfig, Input, Output, PcKind, RoomSummary, Transport,
};
use crate::signal::JoinParams;
use crate::{Admitted, EngineError, MediaEvent, Permission};

fn engine(now: Instant) -> Engine {
    seeded(now, 7)
}

fn seeded(now: Instant, seed: u64) -> Engine {
    Engine::new(
        EngineConfig {
            local_addrs: vec!["127.0.0.1:7882".parse().unwrap()],
            tcp_addrs: vec!["127.0.0.1:7881".parse().unwrap()],
            ping_interval_secs: 5,
            ping_timeout_secs: 15,
            seed,
            turn: None,
            subscriber_bwe: false,
        },
        now,
        1_700_000_000_000,
    )
}

fn admitted(identity: &str, permission: Permission) -> Admitted {
    Admitted {
        room: "room".into(),
        identity: identity.into(),
        name: identity.to_uppercase(),
        metadata: String::new(),
        permission,
    }
}

/// Everything queued so far, split into (conn, message) signals, closes and events.
#[derive(Default)]
struct Drained {
    signals: Vec<(ConnId, Resp)>,
    closes: Vec<ConnId>,
    events: Vec<MediaEvent>,
    /// Addresses the engine started (`true`) or stopped taking packets from.
    routes: Vec<(Transport, SocketAddr, bool)>,
    records: Vec<crate::record::RecPacket>,
}

impl Drained {
    fn to(&self, conn: ConnId) -> Vec<&Resp> {
        self.signals
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, m)| m)
            .collect()
    }
}

fn drain(engine: &mut Engine) -> Drained {
    let mut out = Drained::default();
    while let Some(output) = engine.poll_output() {
        match output {
            Output::Signal { conn, response } => {
                out.signals.push((conn, response.message.unwrap()))
            }
            Output::Close { conn } => out.closes.push(conn),
            Output::Event(event) => out.events.push(event),
            Output::Transmit { .. } => {}
            Output::Routed { transport, source } => out.routes.push((transport, source, true)),
            Output::Unrouted { transport, source } => out.routes.push((transport, source, false)),
            Output::Record(packet) => out.records.push(packet),
        }
    }
    out
}

fn req(message: Req) -> proto::SignalRequest {
    proto::SignalRequest {
        message: Some(message),
    }
}

/// Hand the engine an input that answers nothing but its outputs.
fn feed(engine: &mut Engine, input: Input, now: Instant) {
    assert_eq!(engine.handle(input, now).unwrap(), Answer::Done);
}

fn joining(conn: ConnId, admitted: Admitted) -> Input {
    Input::Join {
        conn,
        admitted,
        params: JoinParams::default(),
        unix_ms: 1_700_000_000_000,
    }
}

fn signal(conn: ConnId, message: Req) -> Input {
    Input::Signal {
        conn,
        request: req(message),
    }
}

fn rooms(engine: &mut Engine, now: Instant) -> Vec<RoomSummary> {
    match engine.handle(Input::ListRooms, now).unwrap() {
        Answer::Rooms(rooms) => rooms,
        other => panic!("{other:?}"),
    }
}

const A: ConnId = ConnId(1);
const B: ConnId = ConnId(2);

#[test]
fn join_answers_join_response_then_subscriber_offer_with_data_channels() {
    let now = Instant::now();
    let mut engine = engine(now);
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    let out = drain(&mut engine);
    let to_a = out.to(A);
    let Resp::Join(join) = to_a[0] else {
        panic!("first message must be the JoinResponse: {to_a:?}")
    };
    assert!(join.room.as_ref().unwrap().sid.starts_with("RM_"));
    assert!(join.participant.as_ref().unwrap().sid.starts_with("PA_"));
    assert!(join.subscriber_primary);
    assert!(join.other_participants.is_empty());
    let Resp::Offer(offer) = to_a[1] else {
        panic!("then the subscriber offer: {to_a:?}")
    };
    assert_eq!(offer.id, 1);
    assert!(offer.sdp.contains("m=application"), "{}", offer.sdp);
    assert!(
        offer.sdp.contains("a=candidate:") && offer.sdp.contains("127.0.0.1 7882"),
        "{}",
        offer.sdp
    );
    assert!(
        matches!(&out.events[..], [MediaEvent::ParticipantJoined { identity, .. }] if identity == "alice")
    );

    feed(
        &mut engine,
        joining(B, admitted("bob", Permission::default())),
        now,
    );
    let out = drain(&mut engine);
    let Resp::Join(join) = out.to(B)[0] else {
        panic!()
    };
    assert_eq!(join.other_participants.len(), 1);
    assert_eq!(join.other_participants[0].identity, "alice");
    let updates: Vec<_> = out.to(A);
    assert!(matches!(updates[..], [Resp::Update(u)] if u.participants[0].identity == "bob"));
    assert!(
        join.ice_servers.is_empty(),
        "no TURN configured, none handed out"
    );
}

#[test]
fn the_join_response_hands_out_turn_servers_with_a_credential_from_the_joins_wall_clock() {
    use crate::turn::{TurnConfig, TurnSecret, TurnUrl, credential};
    let now = Instant::now();
    let secret = TurnSecret::parse("north-wind-turn-secret-0123").unwrap();
    let urls = vec![
        TurnUrl::parse("turn:turn.example.com:3478?transport=udp").unwrap(),
        TurnUrl::parse("turns:turn.example.com:443?transport=tcp").unwrap(),
    ];
    // The engine's own anchor is a day behind the join's wall clock (as after a suspend): the
    // expiry follows the join's.
    let mut engine = Engine::new(
        EngineConfig {
            local_addrs: vec!["127.0.0.1:7882".parse().unwrap()],
            tcp_addrs: Vec::new(),
            ping_interval_secs: 5,
            ping_timeout_secs: 15,
            seed: 7,
            turn: Some(TurnConfig::new(urls, secret.clone(), 600).unwrap()),
            subscriber_bwe: false,
        },
        now,
        1_699_913_600_000,
    );
    feed(
        &mut engine,
        Input::Join {
            conn: A,
            admitted: admitted("alice", Permission::default()),
            params: JoinParams::default(),
            unix_ms: 1_700_000_000_999,
        },
        now,
    );
    let out = drain(&mut engine);
    let Resp::Join(join) = out.to(A)[0] else {
        panic!("first message must be the JoinResponse")
    };
    assert_eq!(join.ice_servers.len(), 1);
    let server = &join.ice_servers[0];
    assert_eq!(
        server.urls,
        vec![
            "turn:turn.example.com:3478?transport=udp",
            "turns:turn.example.com:443?transport=tcp"
        ]
    );
    assert_eq!(server.username, "1700000600:alice");
    assert_eq!(
        server.credential,
        credential(&secret, "alice", 1_700_000_600).password
    );
}

#[test]
fn ping_pong_both_flavours_and_timeout() {
    let now = Instant::now();
    let mut engine = engine(now);
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    drain(&mut engine);
    feed(
        &mut engine,
        signal(
            A,
            Req::PingReq(proto::Ping {
                timestamp: 42,
                rtt: 0,
            }),
        ),
        now,
    );
    feed(&mut engine, signal(A, Req::Ping(7)), now);
    let out = drain(&mut engine);
    assert!(
        matches!(out.to(A)[..], [Resp::PongResp(p), Resp::Pong(7)] if p.last_ping_timestamp == 42 && p.timestamp >= 1_700_000_000_000)
    );

    // Pings keep it alive; silence beyond ping_timeout drops it.
    feed(&mut engine, Input::Timeout, now + Duration::from_secs(10));
    assert!(drain(&mut engine).closes.is_empty());
    feed(
        &mut engine,
        signal(A, Req::Ping(8)),
        now + Duration::from_secs(10),
    );
    feed(&mut engine, Input::Timeout, now + Duration::from_secs(24));
    assert!(drain(&mut engine).closes.is_empty());
    feed(&mut engine, Input::Timeout, now + Duration::from_secs(26));
    let out = drain(&mut engine);
    assert_eq!(out.closes, vec![A]);
    assert_eq!(engine.participant_count(), 0);
}

#[test]
fn add_track_needs_permission_and_promotion_grants_it_live() {
    let now = Instant::now();
    let mut engine = engine(now);
    let listener = Permission {
        can_publish: false,
        ..Permission::default()
    };
    feed(&mut engine, joining(A, admitted("alice", listener)), now);
    feed(
        &mut engine,
        joining(B, admitted("bob", Permission::default())),
        now,
    );
    drain(&mut engine);
    let add = proto::AddTrackRequest {
        cid: "mic-1".into(),
        r#type: proto::TrackType::Audio as i32,
        source: proto::TrackSource::Microphone as i32,
        ..Default::default()
    };
    feed(&mut engine, signal(A, Req::AddTrack(add.clone())), now);
    assert!(
        drain(&mut engine).to(A).is_empty(),
        "refused without a response"
    );

    engine
        .update_permission("room", "alice", Permission::default(), now)
        .unwrap();
    let out = drain(&mut engine);
    for conn in [A, B] {
        assert!(
            out.to(conn).iter().any(
                |m| matches!(m, Resp::Update(u) if u.participants[0].identity == "alice"
                && u.participants[0].permission.as_ref().unwrap().can_publish)
            ),
            "{conn:?} must learn of the promotion"
        );
    }
    feed(&mut engine, signal(A, Req::AddTrack(add)), now);
    let out = drain(&mut engine);
    let Resp::TrackPublished(published) = out.to(A)[0] else {
        panic!("{:?}", out.to(A))
    };
    assert_eq!(published.cid, "mic-1");
    let track = published.track.as_ref().unwrap();
    assert!(track.sid.starts_with("TR_"));
    assert_eq!(track.r#type, proto::TrackType::Audio as i32);

    assert!(matches!(
        engine.handle(
            Input::UpdatePermission {
                room: "room".into(),
                identity: "nobody".into(),
                permission: Permission::default()
            },
            now
        ),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn same_identity_evicts_the_older_session() {
    let now = Instant::now();
    let mut engine = engine(now);
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    drain(&mut engine);
    feed(
        &mut engine,
        joining(B, admitted("alice", Permission::default())),
        now,
    );
    let out = drain(&mut engine);
    assert!(
        matches!(out.to(A)[0], Resp::Leave(l) if l.reason == proto::DisconnectReason::DuplicateIdentity as i32
        && l.action == proto::leave_request::Action::Disconnect as i32)
    );
    assert_eq!(out.closes, vec![A]);
    let Resp::Join(join) = out.to(B)[0] else {
        panic!()
    };
    assert!(join.other_participants.is_empty());
    assert_eq!(engine.participant_count(), 1);
}

#[test]
fn remove_participant_sends_leave_and_tells_the_room() {
    let now = Instant::now();
    let mut engine = engine(now);
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    feed(
        &mut engine,
        joining(B, admitted("bob", Permission::default())),
        now,
    );
    drain(&mut engine);
    engine
        .remove_participant(
            "room",
            "bob",
            proto::DisconnectReason::ParticipantRemoved,
            now,
        )
        .unwrap();
    let out = drain(&mut engine);
    assert!(
        matches!(out.to(B)[0], Resp::Leave(l) if l.action == proto::leave_request::Action::Disconnect as i32)
    );
    assert_eq!(out.closes, vec![B]);
    assert!(out.to(A).iter().any(|m| matches!(m, Resp::Update(u)
        if u.participants[0].identity == "bob"
        && u.participants[0].state == proto::participant_info::State::Disconnected as i32)));
    assert!(matches!(
        engine.handle(
            Input::RemoveParticipant {
                room: "room".into(),
                identity: "bob".into(),
                reason: proto::DisconnectReason::ParticipantRemoved
            },
            now
        ),
        Err(EngineError::NotFound(_))
    ));
    assert_eq!(rooms(&mut engine, now).len(), 1);
    engine
        .handle(
            Input::CloseRoom {
                room: "room".into(),
            },
            now,
        )
        .unwrap();
    assert!(rooms(&mut engine, now).is_empty());
}

#[test]
fn hidden_participants_are_not_announced() {
    let now = Instant::now();
    let mut engine = engine(now);
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    drain(&mut engine);
    let hidden = Permission {
        hidden: true,
        ..Permission::default()
    };
    feed(&mut engine, joining(B, admitted("recorder", hidden)), now);
    let out = drain(&mut engine);
    assert!(out.to(A).is_empty());
}

#[test]
fn hostile_input_does_not_crash() {
    let now = Instant::now();
    let mut engine = engine(now);
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    drain(&mut engine);
    let source = "127.0.0.1:5000".parse().unwrap();
    let local = "127.0.0.1:7882".parse().unwrap();
    let mut seed = 0x1234_5678u32;
    for i in 0..2000usize {
        let bytes: Vec<u8> = (0..(i % 300) + 1)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        feed(
            &mut engine,
            Input::Datagram {
                transport: Transport::Udp,
                source,
                destination: local,
                bytes,
            },
            now,
        );
    }
    // Nonsense signalling.
    feed(
        &mut engine,
        signal(
            A,
            Req::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: "garbage".into(),
                id: 3,
                ..Default::default()
            }),
        ),
        now,
    );
    feed(
        &mut engine,
        signal(
            A,
            Req::Answer(proto::SessionDescription {
                sdp: "v=0".into(),
                ..Default::default()
            }),
        ),
        now,
    );
    feed(
        &mut engine,
        signal(
            A,
            Req::Trickle(proto::TrickleRequest {
                candidate_init: "{".into(),
                target: 1,
                ..Default::default()
            }),
        ),
        now,
    );
    feed(
        &mut engine,
        signal(
            A,
            Req::Mute(proto::MuteTrackRequest {
                sid: "TR_nope".into(),
                muted: true,
            }),
        ),
        now,
    );
    feed(&mut engine, Input::Timeout, now + Duration::from_secs(1));
    drain(&mut engine);
}

/// Subscriber connections offer no bandwidth-estimation extensions (by default convene estimates
/// no downstream bandwidth); publisher connections keep them, for the browser's own estimation.
/// With `subscriber_bwe`, subscriber connections number their packets for the estimator.
#[test]
fn only_publisher_connections_carry_bandwidth_estimation_extensions() {
    let now = Instant::now();
    let engine = engine(now);
    let offer_of = |pc: PcKind| {
        let mut rtc = engine.new_rtc(now, pc);
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, _pending) = api.apply().expect("an offer");
        offer.to_sdp_string()
    };
    let subscriber = offer_of(PcKind::Subscriber);
    assert!(subscriber.contains("a=extmap:"), "{subscriber}");
    assert!(!subscriber.contains("transport-wide-cc"), "{subscriber}");
    assert!(!subscriber.contains("abs-send-time"), "{subscriber}");
    assert!(subscriber.contains("sdes:mid"), "{subscriber}");
    let publisher = offer_of(PcKind::Publisher);
    assert!(publisher.contains("transport-wide-cc"), "{publisher}");

    let mut estimating = engine;
    estimating.config.subscriber_bwe = true;
    let mut rtc = estimating.new_rtc(now, PcKind::Subscriber);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let offer = offer.to_sdp_string();
    assert!(offer.contains("transport-wide-cc"), "{offer}");
    assert!(!offer.contains("abs-send-time"), "{offer}");
}

/// The engine keeps the earliest str0m timeout as it goes instead of scanning every peer per
/// turn; whatever happens (peers alone, joining, leaving), its next wake-up is never later than a
/// live peer's own timer.
#[test]
fn the_next_wake_up_is_never_later_than_any_peers_timer() {
    let now = Instant::now();
    let mut engine = engine(now);
    let exact = |engine: &Engine| {
        engine
            .participants
            .values()
            .flat_map(|p| [&p.publisher, &p.subscriber])
            .filter(|peer| peer.rtc.is_some())
            .map(|peer| peer.next_timeout)
            .min()
    };
    let joins = [(A, 0), (B, 700), (ConnId(3), 1400)];
    let mut joined = 0;
    let mut woke = 0;
    let mut t = now;
    while t < now + Duration::from_secs(4) {
        t = engine.poll_timeout().max(t + Duration::from_millis(1));
        while let Some(&(conn, at_ms)) = joins.get(joined)
            && now + Duration::from_millis(at_ms) <= t
        {
            joined += 1;
            let name = format!("p{joined}");
            feed(
                &mut engine,
                joining(conn, admitted(&name, Permission::default())),
                t,
            );
            assert!(engine.poll_timeout() <= t, "a new peer is due at once");
        }
        if t >= now + Duration::from_secs(2) && engine.participants.contains_key(&B) {
            feed(&mut engine, Input::ConnectionClosed { conn: B }, t);
        }
        feed(&mut engine, Input::Timeout, t);
        woke += 1;
        drain(&mut engine);
        let next = engine.poll_timeout();
        let exact = exact(&engine).expect("live peers");
        // The invariant itself (housekeeping every 500 ms could hide a broken one) and its use.
        assert!(
            engine.earliest_timeout <= exact,
            "kept bound after a peer's timer"
        );
        assert!(
            next <= exact,
            "wake-up {next:?} after a peer's timer {exact:?}"
        );
        assert!(next > t, "nothing is left due after handle_timeout");
    }
    assert_eq!((joined, engine.participant_count()), (3, 2));
    assert!(woke > 3, "str0m's timers ran ({woke} wake-ups)");
}

/// The engine's ids come from the seed in its config: two engines with one seed name the same
/// room, participants and tracks alike; another seed names them otherwise.
#[test]
fn ids_follow_the_seed() {
    let now = Instant::now();
    let ids = |seed| {
        let mut engine = seeded(now, seed);
        let mut ids = Vec::new();
        for (conn, name) in [(A, "alice"), (B, "bob")] {
            feed(
                &mut engine,
                joining(conn, admitted(name, Permission::default())),
                now,
            );
        }
        let add = proto::AddTrackRequest {
            cid: "mic-1".into(),
            r#type: proto::TrackType::Audio as i32,
            ..Default::default()
        };
        feed(&mut engine, signal(A, Req::AddTrack(add)), now);
        for (_, message) in drain(&mut engine).signals {
            match message {
                Resp::Join(join) => {
                    ids.extend([join.room.unwrap().sid, join.participant.unwrap().sid])
                }
                Resp::TrackPublished(published) => ids.push(published.track.unwrap().sid),
                _ => {}
            }
        }
        ids
    };
    let first = ids(7);
    assert_eq!(first.len(), 5, "{first:?}");
    assert_eq!(first[0], first[2], "one room");
    assert_eq!(ids(7), first);
    let other = ids(8);
    assert!(
        first.iter().zip(&other).all(|(a, b)| a != b),
        "{first:?} {other:?}"
    );
}

/// An engine driven by a test, keeping every input it took (as the driver could log them) and
/// what came of each: the answer and the outputs, with str0m's own randomness masked.
struct Recording {
    engine: Engine,
    start: Instant,
    inputs: Vec<(Duration, Input)>,
    observed: Vec<Observed>,
    masks: Masks,
}

/// What one input led to.
#[derive(Debug, PartialEq)]
struct Observed {
    answer: Result<Answer, String>,
    outputs: Vec<Output>,
}

impl Recording {
    fn new(seed: u64, start: Instant) -> Recording {
        Recording {
            engine: seeded(start, seed),
            start,
            inputs: Vec::new(),
            observed: Vec::new(),
            masks: Masks::default(),
        }
    }

    fn input(&mut self, at_ms: u64, input: Input) -> &Observed {
        let at = Duration::from_millis(at_ms);
        self.inputs.push((at, input.clone()));
        let answer = self
            .engine
            .handle(input, self.start + at)
            .map_err(|e| e.to_string());
        let mut outputs = Vec::new();
        while let Some(output) = self.engine.poll_output() {
            outputs.push(self.masks.output(output));
        }
        self.observed.push(Observed { answer, outputs });
        self.observed.last().expect("just pushed")
    }

    /// The same inputs at the same times into a fresh engine with `seed`.
    fn replay(&self, seed: u64) -> Recording {
        let mut replica = Recording::new(seed, self.start);
        for (at, input) in &self.inputs {
            replica.input(at.as_millis() as u64, input.clone());
        }
        replica
    }
}

/// Replaces the values str0m draws itself (ICE credentials, DTLS fingerprints, SDP session ids,
/// the mids and SSRCs of the sections it adds) with `#1`, `#2`, ... in order of first
/// appearance, so two runs compare equal exactly when they agree on everything else, and use
/// str0m's values in the same places.
#[derive(Default)]
struct Masks {
    seen: std::collections::HashMap<String, String>,
}

impl Masks {
    fn mask(&mut self, value: &str) -> String {
        let next = format!("#{}", self.seen.len() + 1);
        self.seen.entry(value.to_owned()).or_insert(next).clone()
    }

    fn sdp(&mut self, sdp: &str) -> String {
        let mut masked = String::new();
        for line in sdp.lines() {
            let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
            let first = words[0].clone();
            for prefix in ["a=mid:", "a=ice-ufrag:", "a=ice-pwd:", "a=ssrc:", "a=msid:"] {
                if let Some(value) = first.strip_prefix(prefix) {
                    words[0] = format!("{prefix}{}", self.mask(value));
                }
            }
            let (from, to) = match first.as_str() {
                "a=group:BUNDLE" | "a=ssrc-group:FID" | "a=fingerprint:sha-256" => (1, words.len()),
                _ if first.starts_with("o=") => (1, 2),
                _ => (0, 0),
            };
            for word in &mut words[from..to] {
                *word = self.mask(word);
            }
            for i in 1..words.len() {
                if words[i - 1] == "ufrag" {
                    words[i] = self.mask(&words[i]);
                }
                if let Some(value) = words[i].strip_prefix("cname:") {
                    words[i] = format!("cname:{}", self.mask(value));
                }
            }
            masked.push_str(&words.join(" "));
            masked.push('\n');
        }
        masked
    }

    fn output(&mut self, output: Output) -> Output {
        match output {
            Output::Signal { conn, mut response } => {
                if let Some(Resp::Offer(sdp) | Resp::Answer(sdp)) = response.message.as_mut() {
                    sdp.sdp = self.sdp(&sdp.sdp);
                    sdp.mid_to_track_id = std::mem::take(&mut sdp.mid_to_track_id)
                        .into_iter()
                        .map(|(mid, track)| (self.mask(&mid), track))
                        .collect();
                }
                Output::Signal { conn, response }
            }
            // STUN transaction ids and DTLS records are str0m's; where and how much is the engine's.
            Output::Transmit {
                transport,
                source,
                destination,
                contents,
            } => Output::Transmit {
                transport,
                source,
                destination,
                contents: vec![0; contents.len()],
            },
            other => other,
        }
    }
}

/// Every input the engine takes is a named value: a recorded session (joins, signalling, a
/// stray datagram, time, control commands and queries) replayed into a second engine with the
/// same seed gives the same answers and outputs, input by input; with another seed it does not.
#[test]
fn a_recorded_session_replays_to_the_same_outputs() {
    use str0m::Rtc;

    let start = Instant::now();
    // The publisher's side of alice's client: one audio track and a data channel.
    let mut client = Rtc::builder().build(start);
    let mut api = client.sdp_api();
    api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("stream".into()),
        Some("mic-1".into()),
        None,
    );
    api.add_channel("_reliable".into());
    let (offer, _pending) = api.apply().expect("an offer");

    let mut run = Recording::new(7, start);
    run.input(0, joining(A, admitted("alice", Permission::default())));
    run.input(0, joining(B, admitted("bob", Permission::default())));
    let published = run.input(
        10,
        signal(
            A,
            Req::AddTrack(proto::AddTrackRequest {
                cid: "mic-1".into(),
                r#type: proto::TrackType::Audio as i32,
                source: proto::TrackSource::Microphone as i32,
                ..Default::default()
            }),
        ),
    );
    let track_sid = published
        .outputs
        .iter()
        .find_map(|output| match output {
            Output::Signal { response, .. } => match &response.message {
                Some(Resp::TrackPublished(published)) => Some(published.track.clone()?.sid),
                _ => None,
            },
            _ => None,
        })
        .expect("the track is published");
    run.input(
        10,
        signal(
            A,
            Req::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 1,
                ..Default::default()
            }),
        ),
    );
    run.input(
        20,
        signal(
            A,
            Req::Trickle(proto::TrickleRequest {
                candidate_init: r#"{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host"}"#
                    .into(),
                target: proto::SignalTarget::Publisher as i32,
                ..Default::default()
            }),
        ),
    );
    run.input(20, signal(A, Req::Ping(1)));
    run.input(
        30,
        Input::Datagram {
            transport: Transport::Udp,
            source: "127.0.0.1:5000".parse().unwrap(),
            destination: "127.0.0.1:7882".parse().unwrap(),
            bytes: vec![0x80, 0, 0, 1, 0, 0, 0, 0],
        },
    );
    run.input(
        40,
        signal(
            B,
            Req::Subscription(proto::UpdateSubscription {
                track_sids: vec![track_sid.clone()],
                subscribe: false,
                ..Default::default()
            }),
        ),
    );
    run.input(50, Input::Timeout);
    run.input(
        60,
        Input::MutePublishedTrack {
            room: "room".into(),
            identity: "alice".into(),
            track_sid,
            muted: true,
        },
    );
    run.input(
        70,
        Input::UpdateParticipant {
            room: "room".into(),
            identity: "bob".into(),
            name: Some("Robert".into()),
            metadata: None,
            attributes: None,
            permission: None,
        },
    );
    run.input(
        80,
        Input::SendData {
            room: "room".into(),
            payload: b"hello".to_vec(),
            kind: DataKind::Reliable,
            destination_identities: vec!["bob".into()],
            topic: None,
        },
    );
    run.input(
        90,
        Input::ListParticipants {
            room: "room".into(),
        },
    );
    run.input(
        100,
        Input::UpdatePermission {
            room: "room".into(),
            identity: "nobody".into(),
            permission: Permission::default(),
        },
    );
    run.input(600, Input::Timeout);
    run.input(
        700,
        Input::RemoveParticipant {
            room: "room".into(),
            identity: "bob".into(),
            reason: proto::DisconnectReason::ParticipantRemoved,
        },
    );
    run.input(800, Input::ConnectionClosed { conn: A });
    run.input(900, Input::ListRooms);

    // The recording is plain data: listable and loggable as it is.
    let log: Vec<String> = run.inputs.iter().map(|(_, i)| format!("{i:?}")).collect();
    assert!(log[0].starts_with("Join {") && log[2].starts_with("Signal {"));
    assert!(
        log.iter()
            .any(|line| line.starts_with("MutePublishedTrack {"))
    );

    let rooms = &run.observed.last().unwrap().answer;
    assert_eq!(rooms, &Ok(Answer::Rooms(Vec::new())), "everyone left");
    assert!(matches!(
        &run.observed[run.observed.len() - 5].answer,
        Err(e) if e.contains("nobody")
    ));

    let replica = run.replay(7);
    assert_eq!(replica.observed.len(), run.observed.len());
    for (i, (ours, theirs)) in run.observed.iter().zip(&replica.observed).enumerate() {
        assert_eq!(ours, theirs, "input {i}: {}", log[i]);
    }
    let other = run.replay(8);
    assert_ne!(
        other.observed, run.observed,
        "another seed names things otherwise"
    );
}

fn sid_of(engine: &mut Engine, identity: &str, now: Instant) -> String {
    match engine
        .handle(
            Input::GetParticipant {
                room: "room".into(),
                identity: identity.into(),
            },
            now,
        )
        .unwrap()
    {
        Answer::Participant(info) => info.sid,
        other => panic!("{other:?}"),
    }
}

/// The `(sid, quality)` pairs of every `ConnectionQualityUpdate` sent to `conn`, sorted.
fn qualities(out: &Drained, conn: ConnId) -> Vec<(String, proto::ConnectionQuality)> {
    let mut pairs: Vec<_> = out
        .to(conn)
        .into_iter()
        .filter_map(|m| match m {
            Resp::ConnectionQuality(update) => Some(update.updates.iter()),
            _ => None,
        })
        .flatten()
        .map(|u| (u.participant_sid.clone(), u.quality()))
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn connection_quality_goes_to_everyone_once_then_only_what_changed() {
    use proto::ConnectionQuality::{Excellent, Lost};
    let now = Instant::now();
    let at = |secs| now + Duration::from_secs(secs);
    let mut engine = engine(now);
    for (conn, name) in [(A, "alice"), (B, "bob")] {
        feed(
            &mut engine,
            joining(conn, admitted(name, Permission::default())),
            now,
        );
    }
    let (a, b) = (
        sid_of(&mut engine, "alice", now),
        sid_of(&mut engine, "bob", now),
    );
    drain(&mut engine);
    let sorted = |mut v: Vec<(String, proto::ConnectionQuality)>| {
        v.sort();
        v
    };

    // Not before the first window ends.
    feed(&mut engine, Input::Timeout, at(2));
    assert!(qualities(&drain(&mut engine), A).is_empty());
    // The first rating: each gets its own and the other's (nothing measured: excellent).
    feed(&mut engine, Input::Timeout, at(3));
    let out = drain(&mut engine);
    let both = sorted(vec![(a.clone(), Excellent), (b.clone(), Excellent)]);
    assert_eq!(qualities(&out, A), both);
    assert_eq!(qualities(&out, B), both);
    // Unchanged: nothing is sent.
    feed(&mut engine, Input::Timeout, at(6));
    let out = drain(&mut engine);
    assert!(qualities(&out, A).is_empty() && qualities(&out, B).is_empty());
    // Nothing arrived from either on its connections for longer than LOST_AFTER: lost.
    feed(&mut engine, signal(A, Req::Ping(1)), at(9)); // signalling alone is not media
    feed(&mut engine, Input::Timeout, at(9));
    let out = drain(&mut engine);
    let lost = sorted(vec![(a.clone(), Lost), (b.clone(), Lost)]);
    assert_eq!(qualities(&out, A), lost);
    assert_eq!(qualities(&out, B), lost);

    // A late joiner gets everyone's at the next rating; the others only the newcomer's.
    const C: ConnId = ConnId(3);
    feed(
        &mut engine,
        joining(C, admitted("carol", Permission::default())),
        at(10),
    );
    let c = sid_of(&mut engine, "carol", at(10));
    drain(&mut engine);
    feed(&mut engine, Input::Timeout, at(12));
    let out = drain(&mut engine);
    assert_eq!(
        qualities(&out, C),
        sorted(vec![(a, Lost), (b, Lost), (c.clone(), Excellent)])
    );
    assert_eq!(qualities(&out, A), vec![(c.clone(), Excellent)]);
    assert_eq!(qualities(&out, B), vec![(c, Excellent)]);
    // Nobody published audio: no speakers were ever reported.
    assert!(
        !out.signals
            .iter()
            .any(|(_, m)| matches!(m, Resp::SpeakersChanged(_)))
    );
}

/// A client whose UDP is blocked connects over ICE-TCP: its connectivity checks arrive as TCP
/// frames at the engine's passive candidate, and everything the engine answers goes back as TCP
/// on that same connection (the local and remote addresses the client connected with); nothing
/// reaches the client over UDP, yet ICE and DTLS complete and the data channel opens.
#[test]
fn a_client_connects_over_tcp_and_is_answered_on_its_connection() {
    use std::collections::HashSet;

    use str0m::net::{Protocol, Receive, TcpType};
    use str0m::{Candidate, Event, Input as RtcInput, Output as RtcOutput, Rtc};

    let start = Instant::now();
    let mut now = start;
    let mut engine = engine(now);
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    drain(&mut engine);

    // The client's publisher connection: an active TCP candidate only (its UDP is blocked).
    let client_addr: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let server_tcp: SocketAddr = "127.0.0.1:7881".parse().unwrap();
    let mut client = Rtc::builder().build(now);
    client.add_local_candidate(
        Candidate::builder()
            .tcp()
            .host(client_addr)
            .tcptype(TcpType::Active)
            .build()
            .unwrap(),
    );
    let mut api = client.sdp_api();
    let channel = api.add_channel("_reliable".into());
    let (offer, pending) = api.apply().expect("an offer");
    feed(
        &mut engine,
        signal(
            A,
            Req::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 1,
                ..Default::default()
            }),
        ),
        now,
    );
    let mut answer = None;
    let mut udp_dropped = 0;
    let mut tcp_delivered = 0;
    let mut connections: HashSet<(SocketAddr, SocketAddr)> = HashSet::new();
    let mut pending_in = Vec::new();
    let mut routed = Vec::new();
    while let Some(output) = engine.poll_output() {
        if let Output::Signal { response, .. } = output
            && let Some(Resp::Answer(sdp)) = response.message
        {
            answer = Some(sdp.sdp);
        }
    }
    let answer = answer.expect("the engine answers the publisher offer");
    assert!(answer.contains("tcptype passive"), "{answer}");
    client
        .sdp_api()
        .accept_answer(
            pending,
            str0m::change::SdpAnswer::from_sdp_string(&answer).unwrap(),
        )
        .unwrap();

    let mut open = false;
    while !open && now < start + Duration::from_secs(10) {
        // The client's packets: TCP ones open (or use) a connection to the passive candidate.
        loop {
            match client.poll_output().unwrap() {
                RtcOutput::Timeout(_) => break,
                RtcOutput::Transmit(t) => {
                    assert_eq!(t.proto, Protocol::Tcp, "the client has only TCP");
                    assert_eq!(t.destination, server_tcp);
                    connections.insert((t.destination, t.source));
                    feed(
                        &mut engine,
                        Input::Datagram {
                            transport: Transport::Tcp,
                            source: t.source,
                            destination: t.destination,
                            bytes: t.contents.to_vec(),
                        },
                        now,
                    );
                }
                RtcOutput::Event(Event::ChannelOpen(id, _)) => open = id == channel,
                RtcOutput::Event(_) => {}
            }
        }
        feed(&mut engine, Input::Timeout, now);
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Transmit {
                    transport,
                    source,
                    destination,
                    contents,
                } => match transport {
                    Transport::Udp => udp_dropped += 1,
                    // A passive candidate sends only on a connection the client made.
                    Transport::Tcp if connections.contains(&(source, destination)) => {
                        // The engine said it takes this address's packets before it sent there
                        // (several engines: the IO layer routes the client's next packets by it).
                        assert!(
                            routed.contains(&(Transport::Tcp, destination)),
                            "sent to {destination} before claiming it"
                        );
                        tcp_delivered += 1;
                        pending_in.push((source, destination, contents));
                    }
                    Transport::Tcp => {}
                },
                Output::Routed { transport, source } => routed.push((transport, source)),
                _ => {}
            }
        }
        for (source, destination, contents) in pending_in.drain(..) {
            let receive = Receive {
                proto: Protocol::Tcp,
                source,
                destination,
                contents: contents.as_slice().try_into().unwrap(),
            };
            client
                .handle_input(RtcInput::Receive(now, receive))
                .unwrap();
        }
        now += Duration::from_millis(5);
        client.handle_input(RtcInput::Timeout(now)).unwrap();
    }
    assert!(open, "the data channel opened over TCP");
    assert!(tcp_delivered > 3, "STUN, DTLS and SCTP came back over TCP");
    assert_eq!(
        udp_dropped, 0,
        "the engine never tried UDP: the client offered none"
    );
    assert_eq!(
        routed,
        vec![(Transport::Tcp, client_addr)],
        "one claim, for the client's one address"
    );
    // The participant goes: so does its route.
    feed(&mut engine, Input::ConnectionClosed { conn: A }, now);
    assert_eq!(
        drain(&mut engine).routes,
        vec![(Transport::Tcp, client_addr, false)]
    );
}

/// Alice publishes a camera with the `layers` she announces (three: simulcast); bob and carol
/// subscribe. Answers the engine, the time after it and the track's sid.
fn camera_published(layers: Vec<proto::VideoLayer>) -> (Engine, Instant, String) {
    use str0m::Rtc;

    let now = Instant::now();
    let mut engine = engine(now);
    for (conn, name) in [(A, "alice"), (B, "bob"), (C, "carol")] {
        feed(
            &mut engine,
            joining(conn, admitted(name, Permission::default())),
            now,
        );
    }
    feed(
        &mut engine,
        signal(
            A,
            Req::AddTrack(proto::AddTrackRequest {
                cid: "camera-1".into(),
                r#type: proto::TrackType::Video as i32,
                source: proto::TrackSource::Camera as i32,
                width: 1280,
                height: 720,
                layers,
                ..Default::default()
            }),
        ),
        now,
    );
    let mut client = Rtc::builder().build(now);
    let mut api = client.sdp_api();
    let mid = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some("stream".into()),
        Some("camera-1".into()),
        None,
    );
    let (offer, _pending) = api.apply().expect("an offer");
    feed(
        &mut engine,
        signal(
            A,
            Req::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 1,
                ..Default::default()
            }),
        ),
        now,
    );
    // str0m reports the new media section once the connection is up, which takes a network:
    // the engine is told as it would be.
    engine.bind_media(A, mid, MediaKind::Video, now);
    let out = drain(&mut engine);
    let sid = out
        .to(A)
        .into_iter()
        .find_map(|m| match m {
            Resp::TrackPublished(p) => Some(p.track.clone()?.sid),
            _ => None,
        })
        .expect("published");
    for conn in [B, C] {
        feed(
            &mut engine,
            signal(
                conn,
                Req::Subscription(proto::UpdateSubscription {
                    track_sids: vec![sid.clone()],
                    subscribe: true,
                    ..Default::default()
                }),
            ),
            now,
        );
    }
    drain(&mut engine);
    // Both subscribers have a down track of it (offered once their first answer is in).
    for conn in [B, C] {
        assert!(
            engine.participants[&conn]
                .down
                .iter()
                .any(|d| d.track_sid == sid),
            "{conn:?} subscribed to the camera"
        );
    }
    (engine, now, sid)
}

const C: ConnId = ConnId(3);

fn simulcast_layers() -> Vec<proto::VideoLayer> {
    [
        (proto::VideoQuality::Low, 320, 180, 150_000),
        (proto::VideoQuality::Medium, 640, 360, 500_000),
        (proto::VideoQuality::High, 1280, 720, 1_700_000),
    ]
    .into_iter()
    .map(|(quality, width, height, bitrate)| proto::VideoLayer {
        quality: quality as i32,
        width,
        height,
        bitrate,
        ..Default::default()
    })
    .collect()
}

fn settings(conn: ConnId, update: proto::UpdateTrackSettings) -> Input {
    signal(conn, Req::TrackSetting(update))
}

/// The layers (low, medium, high) of every `SubscribedQualityUpdate` sent to `conn` for `sid`,
/// checking that the codec list says the same.
fn dynacast_updates(out: &Drained, conn: ConnId, sid: &str) -> Vec<[bool; 3]> {
    out.to(conn)
        .into_iter()
        .filter_map(|m| match m {
            Resp::SubscribedQualityUpdate(u) if u.track_sid == sid => Some(u),
            _ => None,
        })
        .map(|u| {
            let layers = |qs: &[proto::SubscribedQuality]| -> [bool; 3] {
                let mut on = [false; 3];
                for q in qs {
                    on[q.quality as usize] = q.enabled;
                }
                on
            };
            assert_eq!(u.subscribed_codecs.len(), 1);
            assert_eq!(u.subscribed_codecs[0].codec, "vp8");
            assert_eq!(
                layers(&u.subscribed_codecs[0].qualities),
                layers(&u.subscribed_qualities)
            );
            layers(&u.subscribed_qualities)
        })
        .collect()
}

/// What a subscriber asks of a track (`UpdateTrackSettings`) lands on its down track: a size
/// picks the lowest layer that covers it, a quality caps, `disabled` pauses; it is kept for a down
/// track made later, and a sid it cannot see changes nothing.
#[test]
fn track_settings_set_each_subscribers_layer_cap_and_pause() {
    use crate::adaptive::Quality;
    let (mut engine, now, sid) = camera_published(simulcast_layers());
    let cap = |engine: &Engine, conn: ConnId| {
        let down = engine.participants[&conn]
            .down
            .iter()
            .find(|d| d.track_sid == sid)
            .expect("a down track");
        (down.cap(), down.settings.disabled)
    };
    assert_eq!(cap(&engine, B), (Quality::High, false));

    // A small element: the low layer covers it.
    feed(
        &mut engine,
        settings(
            B,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                width: 300,
                height: 160,
                ..Default::default()
            },
        ),
        now,
    );
    assert_eq!(cap(&engine, B), (Quality::Low, false));
    assert_eq!(
        cap(&engine, C),
        (Quality::High, false),
        "carol's is her own"
    );
    // A quality cap (no size).
    feed(
        &mut engine,
        settings(
            C,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                quality: proto::VideoQuality::Medium as i32,
                ..Default::default()
            },
        ),
        now,
    );
    assert_eq!(cap(&engine, C), (Quality::Medium, false));
    // Hidden: paused.
    feed(
        &mut engine,
        settings(
            B,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                disabled: true,
                quality: proto::VideoQuality::High as i32,
                ..Default::default()
            },
        ),
        now,
    );
    assert_eq!(cap(&engine, B), (Quality::High, true));
    // Shown again: the forwarder restarts, so it resumes at a keyframe.
    feed(
        &mut engine,
        settings(
            B,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                quality: proto::VideoQuality::High as i32,
                ..Default::default()
            },
        ),
        now,
    );
    assert_eq!(cap(&engine, B), (Quality::High, false));
    let down = engine.participants[&B]
        .down
        .iter()
        .find(|d| d.track_sid == sid)
        .unwrap();
    assert_eq!(down.forwarder.current(), None);

    // Settings for a track nobody publishes, or for one's own, are ignored and not kept.
    let alices_own = settings(
        A,
        proto::UpdateTrackSettings {
            track_sids: vec![sid.clone(), "TR_nothing".into()],
            disabled: true,
            ..Default::default()
        },
    );
    feed(&mut engine, alices_own, now);
    assert!(engine.participants[&A].track_settings.is_empty());
    // A flood of sids is cut, never stored beyond the bound.
    feed(
        &mut engine,
        settings(
            B,
            proto::UpdateTrackSettings {
                track_sids: (0..10_000).map(|i| format!("TR_{i}")).collect(),
                quality: 99,
                width: u32::MAX,
                height: 0,
                ..Default::default()
            },
        ),
        now,
    );
    assert_eq!(engine.participants[&B].track_settings.len(), 1);
    assert_eq!(engine.participant_count(), 3);

    // Unsubscribed and subscribed again: the new down track keeps what bob asked.
    for subscribe in [false, true] {
        feed(
            &mut engine,
            signal(
                B,
                Req::Subscription(proto::UpdateSubscription {
                    track_sids: vec![sid.clone()],
                    subscribe,
                    ..Default::default()
                }),
            ),
            now,
        );
    }
    feed(
        &mut engine,
        settings(
            B,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                quality: proto::VideoQuality::Low as i32,
                ..Default::default()
            },
        ),
        now,
    );
    let caps: Vec<_> = engine.participants[&B]
        .down
        .iter()
        .filter(|d| d.track_sid == sid)
        .map(|d| d.cap())
        .collect();
    assert!(caps.iter().all(|c| *c == Quality::Low), "{caps:?}");
}

/// Dynacast: the publisher is told the best layer anyone needs; more at once (at the next
/// housekeeping tick), less only after it held for the pause delay; nobody watching pauses all.
#[test]
fn dynacast_tells_the_publisher_which_layers_anyone_needs() {
    let (mut engine, now, sid) = camera_published(simulcast_layers());
    let at = |ms| now + Duration::from_millis(ms);
    let low = |conn| {
        settings(
            conn,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                quality: proto::VideoQuality::Low as i32,
                ..Default::default()
            },
        )
    };
    // Everyone wants the top layer, which the publisher sends from the start: nothing to say.
    feed(&mut engine, Input::Timeout, at(600));
    assert!(dynacast_updates(&drain(&mut engine), A, &sid).is_empty());

    // Bob goes to low; carol still wants high: still nothing.
    feed(&mut engine, low(B), at(700));
    feed(&mut engine, Input::Timeout, at(5_000));
    assert!(dynacast_updates(&drain(&mut engine), A, &sid).is_empty());
    // Carol too: only the low layer is needed, said once the pause delay has passed.
    feed(&mut engine, low(C), at(5_100));
    let mut told = Vec::new();
    let mut t = 5_100;
    while t < 10_000 {
        t += 100;
        feed(&mut engine, Input::Timeout, at(t));
        told.extend(
            dynacast_updates(&drain(&mut engine), A, &sid)
                .into_iter()
                .map(|u| (t, u)),
        );
    }
    assert_eq!(told.len(), 1, "{told:?}");
    let (when, layers) = told[0];
    assert_eq!(layers, [true, false, false]);
    assert!((8_100..=8_700).contains(&when), "told at {when} ms");

    // Carol enlarges her view to 640x360: the medium layer is asked for at the next tick.
    feed(
        &mut engine,
        settings(
            C,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                width: 640,
                height: 360,
                ..Default::default()
            },
        ),
        at(10_000),
    );
    feed(&mut engine, Input::Timeout, at(10_600));
    assert_eq!(
        dynacast_updates(&drain(&mut engine), A, &sid),
        vec![[true, true, false]]
    );

    // Both leave: after the delay, every layer paused.
    for conn in [B, C] {
        feed(
            &mut engine,
            signal(conn, Req::Leave(proto::LeaveRequest::default())),
            at(11_000),
        );
    }
    feed(&mut engine, Input::Timeout, at(11_600));
    assert!(dynacast_updates(&drain(&mut engine), A, &sid).is_empty());
    feed(&mut engine, Input::Timeout, at(14_700));
    assert_eq!(
        dynacast_updates(&drain(&mut engine), A, &sid),
        vec![[false, false, false]]
    );
    assert_eq!(engine.participant_count(), 1);
}

/// A track published without simulcast has one layer: its publisher is never told to pause it.
#[test]
fn a_single_layer_track_gets_no_dynacast() {
    let (mut engine, now, sid) = camera_published(Vec::new());
    feed(
        &mut engine,
        settings(
            B,
            proto::UpdateTrackSettings {
                track_sids: vec![sid.clone()],
                disabled: true,
                ..Default::default()
            },
        ),
        now,
    );
    for s in 1..10 {
        feed(&mut engine, Input::Timeout, now + Duration::from_secs(s));
    }
    let out = drain(&mut engine);
    assert!(
        !out.signals
            .iter()
            .any(|(_, m)| matches!(m, Resp::SubscribedQualityUpdate(_))),
    );
}

#[test]
fn everyone_in_a_recorded_room_is_told_and_a_room_recorded_before_it_opens_starts_recorded() {
    let now = Instant::now();
    let mut engine = engine(now);
    // Marked recorded before anyone is in it (this shard may be where it opens).
    feed(
        &mut engine,
        Input::Record {
            room: "room".into(),
            recording: Some("rec_1".into()),
        },
        now,
    );
    feed(
        &mut engine,
        joining(A, admitted("alice", Permission::default())),
        now,
    );
    let out = drain(&mut engine);
    let Resp::Join(join) = out.to(A)[0] else {
        panic!("a join response first");
    };
    assert!(join.room.as_ref().unwrap().active_recording);
    feed(
        &mut engine,
        joining(B, admitted("bob", Permission::default())),
        now,
    );
    drain(&mut engine);
    // Stopped: both are told, once.
    feed(
        &mut engine,
        Input::Record {
            room: "room".into(),
            recording: None,
        },
        now,
    );
    let out = drain(&mut engine);
    for conn in [A, B] {
        let updates: Vec<bool> = out
            .to(conn)
            .iter()
            .filter_map(|m| match m {
                Resp::RoomUpdate(update) => update.room.as_ref().map(|r| r.active_recording),
                _ => None,
            })
            .collect();
        assert_eq!(updates, vec![false], "{conn:?}");
    }
    // The same again changes nothing and tells nobody.
    feed(
        &mut engine,
        Input::Record {
            room: "room".into(),
            recording: None,
        },
        now,
    );
    assert!(drain(&mut engine).signals.is_empty());
    // Started again: told again; a keyframe request for a track nobody has is no error.
    feed(
        &mut engine,
        Input::Record {
            room: "room".into(),
            recording: Some("rec_2".into()),
        },
        now,
    );
    let out = drain(&mut engine);
    assert!(out.to(B).iter().any(|m| matches!(
        m,
        Resp::RoomUpdate(proto::RoomUpdate { room: Some(r) }) if r.active_recording
    )));
    feed(
        &mut engine,
        Input::RecordKeyframe {
            room: "room".into(),
            track_sid: "TR_none".into(),
        },
        now,
    );
}

/// With subscriber estimation on, a subscriber whose receiver reports show heavy loss on its
/// video has its layers fitted to what got through, below the estimate it still has; another
/// subscriber of the same track, without such reports, keeps the top layer.
#[test]
fn heavy_loss_in_a_subscribers_receiver_reports_fits_its_layer_below_the_estimate() {
    use crate::adaptive::Quality;
    use str0m::media::Mid;
    use str0m::stats::MediaEgressStats;

    let (mut engine, now, sid) = camera_published(simulcast_layers());
    engine.config.subscriber_bwe = true;
    let mid = Mid::from("7");
    for conn in [B, C] {
        let participant = engine.participants.get_mut(&conn).expect("joined");
        participant.bwe_estimate = Some(5_000_000);
        for down in participant.down.iter_mut().filter(|d| d.track_sid == sid) {
            down.state = super::state::DownState::Open(mid);
        }
    }
    let layer = |engine: &Engine, conn: ConnId| {
        engine.participants[&conn]
            .down
            .iter()
            .find(|d| d.track_sid == sid)
            .expect("a down track")
            .bwe_cap
    };
    engine.fit_to_estimates(now);
    assert_eq!(
        (layer(&engine, B), layer(&engine, C)),
        (Quality::High, Quality::High)
    );

    let report = |bytes: u64, at: Instant, loss: Option<f32>| MediaEgressStats {
        mid,
        rid: None,
        bytes,
        packets: bytes / 1_000,
        firs: 0,
        plis: 0,
        nacks: 0,
        rtt: None,
        loss,
        timestamp: at,
        remote: None,
    };
    // Bob's link is policed: of 2 Mbit/s sent in a second, 85% lost (300 kbit/s got through),
    // while the estimator still says 5 Mbit/s.
    let later = now + Duration::from_secs(1);
    engine.on_egress_stats(B, report(0, now, None));
    engine.on_egress_stats(B, report(250_000, later, Some(0.85)));
    engine.fit_to_estimates(later);
    assert_eq!(
        layer(&engine, B),
        Quality::Low,
        "bob's fits what got through"
    );
    assert_eq!(
        layer(&engine, C),
        Quality::High,
        "carol's link is not bob's"
    );

    // Light loss afterwards holds it there; the estimate dropping under the cap leads again.
    let after = later + Duration::from_secs(1);
    engine.on_egress_stats(B, report(290_000, after, Some(0.05)));
    engine.fit_to_estimates(after);
    assert_eq!(layer(&engine, B), Quality::Low);
    engine
        .participants
        .get_mut(&B)
        .expect("joined")
        .bwe_estimate = Some(200_000);
    engine.fit_to_estimates(after + Duration::from_secs(1));
    assert_eq!(layer(&engine, B), Quality::Low);
    assert!(
        engine.participants[&B].loss_cap.is_clear(),
        "the estimate is lower than the cap: the cap is gone"
    );
}
