//! Publishing and subscriptions: binding a publisher's media sections to its tracks,
//! unpublishing, bringing each subscriber's down tracks in line with what it wants and may have,
//! and the subscriber offers that carry them.

use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use str0m::media::{Direction, MediaKind, Mid};

use crate::MediaEvent;
use crate::adaptive::Quality;
use crate::forward::{LayerForwarder, SeqRewriter, Vp8Rewriter};

use super::rtc::subscriber_channels;
use super::state::{DownState, DownTrack, Participant, Published, TrackKey};
use super::{ConnId, Engine, Output, PcKind};

impl Engine {
    /// A media section appeared on `conn`'s publisher: attach it to a track.
    pub(super) fn bind_media(&mut self, conn: ConnId, mid: Mid, kind: MediaKind, now: Instant) {
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
    pub(super) fn check_unpublished(&mut self, conn: ConnId, now: Instant) {
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
    pub(super) fn unpublish(
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

    pub(super) fn reconcile_room(&mut self, room: &str, now: Instant) {
        for member in self.members(room) {
            self.reconcile(member);
            self.negotiate_subscriber(member, now);
        }
    }

    /// Bring `conn`'s down tracks in line with what it wants and may have.
    pub(super) fn reconcile(&mut self, conn: ConnId) {
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
                let settings = participant
                    .track_settings
                    .get(&sid)
                    .copied()
                    .unwrap_or_default();
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
                    settings,
                    bwe_cap: Quality::High,
                });
            }
        }
    }

    /// Send a subscriber offer if anything changed and none is outstanding.
    pub(super) fn negotiate_subscriber(&mut self, conn: ConnId, now: Instant) {
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
}
