//! Adaptive streams on the engine: a subscriber's `UpdateTrackSettings` (disabled, a size, a
//! quality cap) applied to its down tracks, and dynacast (`SubscribedQualityUpdate`: each
//! simulcast publisher told which of its layers anyone needs, so it pauses the rest). The rules
//! are in [`crate::adaptive`]; forwarding picks each subscriber's layer from its down track's cap.

use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use rustc_hash::FxHashMap;

use str0m::bwe::Bitrate;
use str0m::media::MediaKind;

use crate::adaptive::{
    Quality, TrackSettings, UP_HEADROOM, Wanted, allocate, layer_bitrates, subscribed_qualities,
};

use super::state::{DownState, TrackKey};
use super::{ConnId, Engine, PcKind};

/// What one audio track is counted for when sharing a subscriber's bandwidth, bits per second.
const AUDIO_BITRATE: u64 = 40_000;

/// Track sids one `UpdateTrackSettings` may name; more are ignored.
const MAX_SIDS_PER_SETTINGS: usize = 64;
/// Settings kept per subscriber for tracks it has no down track of (yet).
const MAX_KEPT_SETTINGS: usize = 1024;

impl Engine {
    /// `conn` asked to receive tracks differently (`UpdateTrackSettings`). Each named track it can
    /// see gets the settings; a re-enabled track restarts at the next keyframe of its layer (the
    /// forwarder asks the publisher for one), a new cap moves it at the next keyframe of the new
    /// layer. Sids it cannot see are ignored.
    pub(super) fn on_track_settings(
        &mut self,
        conn: ConnId,
        update: proto::UpdateTrackSettings,
        _now: Instant,
    ) {
        let Some(participant) = self.participants.get(&conn) else {
            return;
        };
        let room = participant.room.clone();
        let members = self.members(&room);
        let mut resolved = Vec::new();
        for sid in update.track_sids.iter().take(MAX_SIDS_PER_SETTINGS) {
            let layers = members
                .iter()
                .filter(|m| **m != conn)
                .filter_map(|m| self.participants.get(m))
                .flat_map(|p| p.published.iter())
                .find(|t| t.sid.as_str() == sid)
                .map(|t| t.info.layers.clone());
            match layers {
                Some(layers) => {
                    resolved.push((sid.clone(), TrackSettings::from_request(&update, &layers)))
                }
                None => tracing::debug!(?conn, sid, "track settings for a track it cannot see"),
            }
        }
        let participant = self.participants.get_mut(&conn).expect("checked above");
        for (sid, settings) in resolved {
            if participant.track_settings.len() < MAX_KEPT_SETTINGS
                || participant.track_settings.contains_key(&sid)
            {
                participant.track_settings.insert(sid.clone(), settings);
            }
            for down in participant.down.iter_mut().filter(|d| d.track_sid == sid) {
                if down.settings.disabled && !settings.disabled {
                    // Resume at a keyframe: the forwarder waits for one and asks for it.
                    down.forwarder.restart();
                }
                down.settings = settings;
            }
        }
    }

    /// Tell each simulcast publisher which layers its subscribers need, when that changed (more at
    /// once, less after [`crate::adaptive::DYNACAST_PAUSE_DELAY`]).
    pub(super) fn update_dynacast(&mut self, now: Instant) {
        // The best quality any subscriber needs, per published track: one pass over down tracks.
        let mut wanted: FxHashMap<TrackKey, Quality> = FxHashMap::default();
        for participant in self.participants.values() {
            for down in &participant.down {
                if down.settings.disabled
                    || matches!(
                        down.state,
                        DownState::ToStop(_) | DownState::NegotiatingStop(_)
                    )
                {
                    continue;
                }
                let need = down.settings.max;
                wanted
                    .entry(down.source_key)
                    .and_modify(|q| *q = (*q).max(need))
                    .or_insert(need);
            }
        }
        let mut messages = Vec::new();
        for (conn, participant) in self.participants.iter_mut() {
            for track in participant.published.iter_mut().filter(|t| t.mid.is_some()) {
                let Some(dynacast) = track.dynacast.as_mut() else {
                    continue;
                };
                let Some(max) = dynacast.update(wanted.get(&track.key).copied(), now) else {
                    continue;
                };
                let qualities = subscribed_qualities(max);
                let codec = track
                    .info
                    .mime_type
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                messages.push((
                    *conn,
                    proto::SubscribedQualityUpdate {
                        track_sid: track.sid.to_string(),
                        subscribed_qualities: qualities.clone(),
                        subscribed_codecs: vec![proto::SubscribedCodec { codec, qualities }],
                    },
                ));
            }
        }
        for (conn, update) in messages {
            self.send(conn, Resp::SubscribedQualityUpdate(update));
        }
    }

    /// Fit each estimating subscriber's video tracks to its latest bandwidth estimate
    /// ([`crate::adaptive::allocate`]), and ask its estimator to look for what they want at best.
    pub(super) fn fit_to_estimates(&mut self, now: Instant) {
        if !self.config.subscriber_bwe {
            return;
        }
        let mut rates: FxHashMap<TrackKey, [u64; 3]> = FxHashMap::default();
        for participant in self.participants.values() {
            for track in &participant.published {
                if track.kind == MediaKind::Video {
                    rates.insert(track.key, layer_bitrates(&track.info.layers));
                }
            }
        }
        let mut asks = Vec::new();
        for (conn, participant) in self.participants.iter_mut() {
            let Some(estimated) = participant.bwe_estimate else {
                continue;
            };
            // The receiver reports since the last fit, over every video stream it is sent: heavy
            // loss caps the estimate at what got through (`LossCap`).
            participant.egress.retain(|mid, _| {
                participant
                    .down
                    .iter()
                    .any(|d| d.kind == MediaKind::Video && d.state.mid() == Some(*mid))
            });
            let (sent, lost) = participant
                .egress
                .values_mut()
                .filter_map(|e| e.report.take())
                .fold((0u64, 0f64), |(sent, lost), (rate, loss)| {
                    (sent + rate, lost + rate as f64 * f64::from(loss))
                });
            if sent > 0 {
                participant
                    .loss_cap
                    .report(sent, (lost / sent as f64) as f32, now);
            }
            let estimate = participant.loss_cap.limit(estimated, now);
            let live = |d: &&mut super::state::DownTrack| {
                !d.settings.disabled && matches!(d.state, DownState::Open(_))
            };
            let audio = participant
                .down
                .iter_mut()
                .filter(|d| d.kind == MediaKind::Audio)
                .filter(live)
                .count() as u64
                * AUDIO_BITRATE;
            let mut video: Vec<&mut super::state::DownTrack> = participant
                .down
                .iter_mut()
                .filter(|d| d.kind == MediaKind::Video)
                .filter(live)
                .collect();
            let wanted: Vec<Wanted> = video
                .iter()
                .map(|d| Wanted {
                    max: d.settings.max,
                    current: d.cap(),
                    bitrates: rates
                        .get(&d.source_key)
                        .copied()
                        .unwrap_or_else(|| layer_bitrates(&[])),
                })
                .collect();
            let given = allocate(estimate, audio, &wanted);
            for (down, quality) in video.iter_mut().zip(given) {
                if down.bwe_cap != quality {
                    tracing::debug!(?conn, estimate, estimated, track = %down.track_sid, from = ?down.bwe_cap, to = ?quality, "layer fitted to the estimate");
                    down.bwe_cap = quality;
                }
            }
            // What they want at best, with the headroom a step up needs, so the estimate can
            // grow far enough to allow it.
            let video_best: u64 = wanted.iter().map(|w| w.bitrates[w.max as usize]).sum();
            let desired = audio + (video_best as f64 * UP_HEADROOM) as u64;
            if desired != participant.bwe_desired {
                participant.bwe_desired = desired;
                asks.push((*conn, desired));
            }
        }
        for (conn, desired) in asks {
            if let Some(participant) = self.participants.get_mut(&conn) {
                participant
                    .subscriber
                    .with(|rtc| rtc.bwe().set_bitrate(Bitrate::ZERO, Bitrate::from(desired)));
            }
            self.drain(conn, PcKind::Subscriber, now);
        }
    }
}
