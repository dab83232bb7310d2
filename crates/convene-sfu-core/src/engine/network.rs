//! Network input and time: datagrams routed to their peer connection, str0m's timers,
//! keepalive and housekeeping, draining each `Rtc`'s output and handling its events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use str0m::bwe::BweKind;
use str0m::net::Receive;
use str0m::{Event, Input, Output as RtcOutput};

use super::{ConnId, DataKind, Engine, Output, PcKind, Transport};

const MAX_DATA_PACKET_BYTES: usize = 256 * 1024;
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

impl Engine {
    /// A packet arrived over `transport` at local address `destination` from `source`.
    pub(super) fn handle_datagram(
        &mut self,
        transport: Transport,
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
                proto: transport.protocol(),
                source,
                destination,
                contents,
            },
        );
        let mut target =
            self.route_cache
                .get(&(transport, source))
                .copied()
                .filter(|(conn, pc)| {
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
                self.route_cache.insert((transport, source), found);
                self.outputs.push_back(Output::Routed { transport, source });
            }
        }
        let Some((conn, pc)) = target else {
            return;
        };
        let participant = self.participants.get_mut(&conn).expect("found above");
        participant.last_rx = now;
        match participant.peer(pc).with(|rtc| rtc.handle_input(input)) {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::debug!(?conn, ?pc, "input refused: {e}"),
            None => {}
        }
        self.drain(conn, pc, now);
        self.process(now);
    }

    /// Time passed: drive str0m timers, keepalive checks and housekeeping.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
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
            self.update_dynacast(now);
            self.fit_to_estimates(now);
        }
        self.signal_timers(now);
        self.process(now);
    }

    /// Let str0m's timers of `pc` of `conn` run, then poll it.
    pub(super) fn run_timers(&mut self, conn: ConnId, pc: PcKind, now: Instant) {
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
    pub(super) fn drain(&mut self, conn: ConnId, pc: PcKind, _now: Instant) {
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
                    Ok(RtcOutput::Transmit(transmit)) => {
                        // Only UDP and TCP candidates exist, so nothing else is sent.
                        if let Some(transport) = Transport::of(transmit.proto) {
                            outputs.push_back(Output::Transmit {
                                transport,
                                source: transmit.source,
                                destination: transmit.destination,
                                contents: transmit.contents.into(),
                            })
                        }
                    }
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
    pub(super) fn process(&mut self, now: Instant) {
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
                    self.disconnect(conn, reason, now);
                }
            }
        }
    }

    pub(super) fn on_rtc_event(&mut self, conn: ConnId, pc: PcKind, event: Event, now: Instant) {
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
            (PcKind::Publisher, Event::MediaIngressStats(stats)) => {
                self.on_ingress_stats(conn, stats)
            }
            (PcKind::Subscriber, Event::MediaEgressStats(stats)) => {
                self.on_egress_stats(conn, stats)
            }
            (_, Event::PeerStats(stats)) => self.on_peer_stats(conn, pc, stats),
            (PcKind::Subscriber, Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. })) => {
                if let Some(participant) = self.participants.get_mut(&conn) {
                    participant.bwe_estimate = Some(estimate.as_u64());
                }
            }
            (_, Event::IceConnectionStateChange(state)) => {
                tracing::debug!(?conn, ?pc, ?state, "ice state");
            }
            _ => {}
        }
    }
}
