//! Media signals the clients are told of: active speakers (`SpeakersChanged`, every
//! [`SPEAKER_INTERVAL`] when the room's speakers changed) and connection quality
//! (`ConnectionQualityUpdate`, every [`QUALITY_INTERVAL`] when a participant's rating changed),
//! from the audio levels `forwarding` meters per packet and the statistics str0m reports for
//! each connection. The rules are in [`crate::speakers`] and [`crate::quality`]; this file
//! gathers their inputs and sends their outputs. A participant who joins is sent the current
//! state once, then the changes.

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use str0m::media::{MediaKind, Mid};
use str0m::stats::{MediaEgressStats, MediaIngressStats, PeerStats};

use crate::quality;

use super::state::Egress;
use super::{ConnId, Engine, PcKind};

/// How often the room's speakers are computed (and sent, when they changed).
pub(super) const SPEAKER_INTERVAL: Duration = Duration::from_millis(400);
/// How often each participant's connection quality is rated (and sent, when it changed).
pub(super) const QUALITY_INTERVAL: Duration = Duration::from_secs(3);
/// How often str0m reports a connection's statistics (several reports per quality window).
pub(super) const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// An RTP clock's ticks per millisecond, by media kind (Opus 48 kHz, video 90 kHz).
fn ticks_per_ms(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48,
        MediaKind::Video => 90,
    }
}

impl Engine {
    /// Run the speaker and quality timers that are due.
    pub(super) fn signal_timers(&mut self, now: Instant) {
        if now >= self.next_speakers {
            let window = now.saturating_duration_since(self.last_speakers);
            self.last_speakers = now;
            self.next_speakers = now + SPEAKER_INTERVAL;
            self.update_speakers(window);
        }
        if now >= self.next_quality {
            self.next_quality = now + QUALITY_INTERVAL;
            self.update_quality(now);
        }
    }

    /// End every audio track's level window; tell each room's members what changed.
    fn update_speakers(&mut self, window: Duration) {
        let mut messages = Vec::new();
        for room in self.rooms.values_mut() {
            let mut speaking = Vec::new();
            for conn in &room.members {
                let Some(participant) = self.participants.get_mut(conn) else {
                    continue;
                };
                let mut loudest: Option<f32> = None;
                for track in &mut participant.published {
                    let Some(meter) = track.meter.as_mut() else {
                        continue;
                    };
                    // Every meter ends its window, muted or not, so a stale one never speaks.
                    if let Some(level) = meter.tick(window)
                        && !track.info.muted
                        && track.mid.is_some()
                    {
                        loudest = Some(loudest.map_or(level, |l| l.max(level)));
                    }
                }
                if let Some(level) = loudest
                    && !participant.permission.hidden
                {
                    speaking.push((participant.info.sid.clone(), level));
                }
            }
            let changes = room.speakers.update(speaking);
            for conn in &room.members {
                let Some(participant) = self.participants.get_mut(conn) else {
                    continue;
                };
                if !participant.speakers_synced {
                    participant.speakers_synced = true;
                    let speakers = room.speakers.snapshot();
                    if !speakers.is_empty() {
                        messages.push((*conn, speakers));
                    }
                } else if let Some(speakers) = &changes {
                    messages.push((*conn, speakers.clone()));
                }
            }
        }
        for (conn, speakers) in messages {
            self.send(
                conn,
                Resp::SpeakersChanged(proto::SpeakersChanged { speakers }),
            );
        }
    }

    /// Rate every participant's last window; tell each room's members whose rating changed (a
    /// member not told yet gets everyone's).
    fn update_quality(&mut self, now: Instant) {
        let mut messages = Vec::new();
        for room in self.rooms.values() {
            let mut changed = Vec::new();
            let mut everyone = Vec::new();
            for conn in &room.members {
                let Some(participant) = self.participants.get_mut(conn) else {
                    continue;
                };
                let link = std::mem::take(&mut participant.link);
                let silent_for = now.saturating_duration_since(participant.last_rx);
                let (rating, score) = quality::rate(&link, silent_for);
                if participant.permission.hidden {
                    continue;
                }
                let info = proto::ConnectionQualityInfo {
                    participant_sid: participant.info.sid.clone(),
                    quality: rating as i32,
                    score,
                };
                if participant.quality != Some(rating) {
                    participant.quality = Some(rating);
                    changed.push(info.clone());
                }
                everyone.push(info);
            }
            for conn in &room.members {
                let Some(participant) = self.participants.get_mut(conn) else {
                    continue;
                };
                if !participant.quality_synced {
                    participant.quality_synced = true;
                    if !everyone.is_empty() {
                        messages.push((*conn, everyone.clone()));
                    }
                } else if !changed.is_empty() {
                    messages.push((*conn, changed.clone()));
                }
            }
        }
        for (conn, updates) in messages {
            self.send(
                conn,
                Resp::ConnectionQuality(proto::ConnectionQualityUpdate { updates }),
            );
        }
    }

    /// str0m's statistics of a stream `conn` publishes (the publisher connection): the loss and
    /// jitter convene's receiver reports carry, and the round trip if known.
    pub(super) fn on_ingress_stats(&mut self, conn: ConnId, stats: MediaIngressStats) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let kind = published_kind(participant, stats.mid);
        if let Some(loss) = stats.loss {
            participant.link.loss(loss);
        }
        let key = (PcKind::Publisher, stats.mid, stats.rid);
        if let Some(loss) = participant.nacks.fraction(key, stats.nacks, stats.packets) {
            participant.link.loss(loss);
        }
        if let Some(kind) = kind {
            let ms = stats.jitter / ticks_per_ms(kind);
            participant
                .link
                .jitter(Duration::from_millis(u64::from(ms)));
        }
        if let Some(rtt) = stats.rtt {
            participant.link.rtt(rtt);
        }
    }

    /// str0m's statistics of a stream `conn` receives (the subscriber connection), from its
    /// receiver reports: the loss and jitter toward it, and the round trip.
    pub(super) fn on_egress_stats(&mut self, conn: ConnId, stats: MediaEgressStats) {
        let estimating = self.config.subscriber_bwe;
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let kind = participant
            .down
            .iter()
            .find(|d| d.state.mid() == Some(stats.mid))
            .map(|d| d.kind);
        if let Some(loss) = stats.loss {
            participant.link.loss(loss);
        }
        if estimating && kind == Some(MediaKind::Video) {
            // The period's rate and loss, for the loss cap (`adaptive::fit_to_estimates`, which
            // runs only with estimation on).
            let report =
                participant
                    .egress
                    .get(&stats.mid)
                    .zip(stats.loss)
                    .and_then(|(last, loss)| {
                        let secs = stats
                            .timestamp
                            .saturating_duration_since(last.at)
                            .as_secs_f64();
                        let bits = stats.bytes.saturating_sub(last.bytes) as f64 * 8.0;
                        (secs > 0.0).then(|| ((bits / secs) as u64, loss))
                    });
            participant.egress.insert(
                stats.mid,
                Egress {
                    bytes: stats.bytes,
                    at: stats.timestamp,
                    report,
                },
            );
        }
        let key = (PcKind::Subscriber, stats.mid, stats.rid);
        if let Some(loss) = participant.nacks.fraction(key, stats.nacks, stats.packets) {
            participant.link.loss(loss);
        }
        if let (Some(kind), Some(remote)) = (kind, &stats.remote) {
            let ms = remote.jitter / ticks_per_ms(kind);
            participant
                .link
                .jitter(Duration::from_millis(u64::from(ms)));
        }
        if let Some(rtt) = stats.rtt {
            participant.link.rtt(rtt);
        }
    }

    /// str0m's statistics of a whole connection: the round trip its ICE checks measured.
    pub(super) fn on_peer_stats(&mut self, conn: ConnId, _pc: PcKind, stats: PeerStats) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        if let Some(rtt) = stats
            .selected_candidate_pair
            .and_then(|pair| pair.current_round_trip_time)
        {
            participant.link.rtt(rtt);
        }
    }
}

fn published_kind(participant: &super::state::Participant, mid: Mid) -> Option<MediaKind> {
    participant
        .published
        .iter()
        .find(|t| t.mid == Some(mid))
        .map(|t| t.kind)
}
