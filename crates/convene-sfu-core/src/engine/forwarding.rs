//! Media forwarding: each incoming RTP packet written to every subscriber's down track
//! (layer choice and rewriting in [`crate::forward`]), and throttled keyframe requests.

use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};

use crate::adaptive::{Quality, choose_layer};
use crate::forward::{FrameMeta, Verdict, Vp8Ids, starts_keyframe};

use super::state::{DownState, TrackKey};
use super::{ConnId, Engine, PcKind};

const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// Simulcast layers of one track considered when choosing a subscriber's layer.
const MAX_LAYERS: usize = 4;

impl Engine {
    pub(super) fn on_rtp(&mut self, conn: ConnId, packet: RtpPacket, now: Instant) {
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
        if let (Some(meter), Some(level)) = (&mut track.meter, packet.header.ext_vals.audio_level) {
            meter.observe(level.unsigned_abs());
        }
        let target = track.layers.best(now).unwrap_or(rid);
        let key = track.key;
        let video = track.kind == MediaKind::Video;
        // The layers there are now, for subscribers capped under the best (most are not).
        let mut recent: [Option<Rid>; MAX_LAYERS] = [None; MAX_LAYERS];
        let mut layer_count = 0;
        if video {
            for (slot, layer) in recent.iter_mut().zip(track.layers.recent(now)) {
                *slot = layer;
                layer_count += 1;
            }
        }
        let recent = &recent[..layer_count];
        let best_quality = Quality::of_rid(target);
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
        let recording = room.recording.clone();
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
            if down.settings.disabled {
                continue;
            }
            let cap = down.cap();
            let target = if layer_count > 1 && cap < best_quality {
                choose_layer(recent.iter().copied(), cap).unwrap_or(target)
            } else {
                target
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
        if let Some(recording) = recording {
            let codec = params.spec().codec;
            self.record_packet(conn, key, &recording, codec, frame, target, &packet, now);
        }
    }

    /// Ask the publisher of track `key` for a keyframe of layer `rid` (throttled).
    pub(super) fn request_keyframe(
        &mut self,
        source: ConnId,
        key: TrackKey,
        rid: Option<Rid>,
        now: Instant,
    ) {
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
}
