//! A client's signalling requests: publisher offers, subscriber answers, trickled candidates,
//! `AddTrackRequest`, mutes, subscription updates, pings and leave.

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_request::Message as Req;
use proto::signal_response::Message as Resp;
use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::MediaKind;

use crate::adaptive::Dynacast;
use crate::forward::LayerSet;
use crate::ids::TrackSid;
use crate::signal;
use crate::speakers::LevelMeter;

use super::state::{DownState, Published, TrackKey};
use super::{ConnId, Engine, PcKind};

const MAX_TRACKS_PER_PARTICIPANT: usize = 32;

impl Engine {
    /// A decoded SignalRequest from `conn`.
    pub(super) fn handle_signal(
        &mut self,
        conn: ConnId,
        request: proto::SignalRequest,
        now: Instant,
    ) {
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
            Req::TrackSetting(settings) => self.on_track_settings(conn, settings, now),
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

    pub(super) fn on_publisher_offer(
        &mut self,
        conn: ConnId,
        offer: proto::SessionDescription,
        now: Instant,
    ) {
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

    pub(super) fn on_subscriber_answer(
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

    pub(super) fn on_trickle(
        &mut self,
        conn: ConnId,
        trickle: proto::TrickleRequest,
        now: Instant,
    ) {
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

    pub(super) fn on_add_track(&mut self, conn: ConnId, add: proto::AddTrackRequest, now: Instant) {
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
            meter: (kind == MediaKind::Audio).then(LevelMeter::default),
            dynacast: (kind == MediaKind::Video && info.layers.len() > 1).then(Dynacast::default),
            recorder: None,
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

    pub(super) fn set_muted(&mut self, conn: ConnId, track_sid: &str, muted: bool) -> bool {
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

    pub(super) fn on_update_subscription(
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
}
