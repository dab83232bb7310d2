//! Engine tests: signalling, permissions, keepalive and hostile input, driven with time passed in.

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;

use super::*;

fn engine(now: Instant) -> Engine {
    Engine::new(
        EngineConfig {
            local_addrs: vec!["127.0.0.1:7882".parse().unwrap()],
            ping_interval_secs: 5,
            ping_timeout_secs: 15,
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
        }
    }
    out
}

fn req(message: Req) -> proto::SignalRequest {
    proto::SignalRequest {
        message: Some(message),
    }
}

const A: ConnId = ConnId(1);
const B: ConnId = ConnId(2);

#[test]
fn join_answers_join_response_then_subscriber_offer_with_data_channels() {
    let now = Instant::now();
    let mut engine = engine(now);
    engine.join(
        A,
        admitted("alice", Permission::default()),
        JoinParams::default(),
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

    engine.join(
        B,
        admitted("bob", Permission::default()),
        JoinParams::default(),
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
}

#[test]
fn ping_pong_both_flavours_and_timeout() {
    let now = Instant::now();
    let mut engine = engine(now);
    engine.join(
        A,
        admitted("alice", Permission::default()),
        JoinParams::default(),
        now,
    );
    drain(&mut engine);
    engine.handle_signal(
        A,
        req(Req::PingReq(proto::Ping {
            timestamp: 42,
            rtt: 0,
        })),
        now,
    );
    engine.handle_signal(A, req(Req::Ping(7)), now);
    let out = drain(&mut engine);
    assert!(
        matches!(out.to(A)[..], [Resp::PongResp(p), Resp::Pong(7)] if p.last_ping_timestamp == 42 && p.timestamp >= 1_700_000_000_000)
    );

    // Pings keep it alive; silence beyond ping_timeout drops it.
    engine.handle_timeout(now + Duration::from_secs(10));
    assert!(drain(&mut engine).closes.is_empty());
    engine.handle_signal(A, req(Req::Ping(8)), now + Duration::from_secs(10));
    engine.handle_timeout(now + Duration::from_secs(24));
    assert!(drain(&mut engine).closes.is_empty());
    engine.handle_timeout(now + Duration::from_secs(26));
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
    engine.join(A, admitted("alice", listener), JoinParams::default(), now);
    engine.join(
        B,
        admitted("bob", Permission::default()),
        JoinParams::default(),
        now,
    );
    drain(&mut engine);
    let add = proto::AddTrackRequest {
        cid: "mic-1".into(),
        r#type: proto::TrackType::Audio as i32,
        source: proto::TrackSource::Microphone as i32,
        ..Default::default()
    };
    engine.handle_signal(A, req(Req::AddTrack(add.clone())), now);
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
    engine.handle_signal(A, req(Req::AddTrack(add)), now);
    let out = drain(&mut engine);
    let Resp::TrackPublished(published) = out.to(A)[0] else {
        panic!("{:?}", out.to(A))
    };
    assert_eq!(published.cid, "mic-1");
    let track = published.track.as_ref().unwrap();
    assert!(track.sid.starts_with("TR_"));
    assert_eq!(track.r#type, proto::TrackType::Audio as i32);

    assert!(matches!(
        engine.update_permission("room", "nobody", Permission::default(), now),
        Err(SfuError::NotFound(_))
    ));
}

#[test]
fn same_identity_evicts_the_older_session() {
    let now = Instant::now();
    let mut engine = engine(now);
    engine.join(
        A,
        admitted("alice", Permission::default()),
        JoinParams::default(),
        now,
    );
    drain(&mut engine);
    engine.join(
        B,
        admitted("alice", Permission::default()),
        JoinParams::default(),
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
    engine.join(
        A,
        admitted("alice", Permission::default()),
        JoinParams::default(),
        now,
    );
    engine.join(
        B,
        admitted("bob", Permission::default()),
        JoinParams::default(),
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
        engine.remove_participant(
            "room",
            "bob",
            proto::DisconnectReason::ParticipantRemoved,
            now
        ),
        Err(SfuError::NotFound(_))
    ));
    assert_eq!(engine.list_rooms().len(), 1);
    engine.close_room("room", now).unwrap();
    assert!(engine.list_rooms().is_empty());
}

#[test]
fn hidden_participants_are_not_announced() {
    let now = Instant::now();
    let mut engine = engine(now);
    engine.join(
        A,
        admitted("alice", Permission::default()),
        JoinParams::default(),
        now,
    );
    drain(&mut engine);
    let hidden = Permission {
        hidden: true,
        ..Permission::default()
    };
    engine.join(B, admitted("recorder", hidden), JoinParams::default(), now);
    let out = drain(&mut engine);
    assert!(out.to(A).is_empty());
}

#[test]
fn hostile_input_does_not_crash() {
    let now = Instant::now();
    let mut engine = engine(now);
    engine.join(
        A,
        admitted("alice", Permission::default()),
        JoinParams::default(),
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
        engine.handle_datagram(source, local, &bytes, now);
    }
    // Nonsense signalling.
    engine.handle_signal(
        A,
        req(Req::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: "garbage".into(),
            id: 3,
            ..Default::default()
        })),
        now,
    );
    engine.handle_signal(
        A,
        req(Req::Answer(proto::SessionDescription {
            sdp: "v=0".into(),
            ..Default::default()
        })),
        now,
    );
    engine.handle_signal(
        A,
        req(Req::Trickle(proto::TrickleRequest {
            candidate_init: "{".into(),
            target: 1,
            ..Default::default()
        })),
        now,
    );
    engine.handle_signal(
        A,
        req(Req::Mute(proto::MuteTrackRequest {
            sid: "TR_nope".into(),
            muted: true,
        })),
        now,
    );
    engine.handle_timeout(now + Duration::from_secs(1));
    drain(&mut engine);
}

/// Subscriber connections offer no bandwidth-estimation extensions (convene estimates no
/// downstream bandwidth); publisher connections keep them, for the browser's own estimation.
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
            engine.join(
                conn,
                admitted(&name, Permission::default()),
                JoinParams::default(),
                t,
            );
            assert!(engine.poll_timeout() <= t, "a new peer is due at once");
        }
        if t >= now + Duration::from_secs(2) && engine.participants.contains_key(&B) {
            engine.connection_closed(B, t);
        }
        engine.handle_timeout(t);
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
