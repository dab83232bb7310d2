//! Recording: a room marked recorded hands out every published track's best layer as
//! [`Output::Record`] packets, each track through a recorder down track of its own (layer
//! choice at keyframes, continuous sequence numbers and timestamps), and its members are told
//! through the room's `active_recording` (LiveKit SDKs fire `RecordingStatusChanged`).

use std::sync::Arc;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response::Message as Resp;
use str0m::format::Codec;
use str0m::media::{MediaKind, Rid};
use str0m::rtp::RtpPacket;

use crate::forward::{FrameMeta, LayerForwarder, SeqRewriter, Verdict};
use crate::record::{RecCodec, RecKind, RecPacket, RecTrack};

use super::state::{Room, TrackKey};
use super::{ConnId, Engine, Output};

/// A published track's recorder: the down track the recording takes.
pub(super) struct Recorder {
    pub(super) track: Arc<RecTrack>,
    pub(super) forwarder: LayerForwarder,
    pub(super) seq: SeqRewriter,
}

/// The codec a recording keeps, for one RTP codec; `None`: not recorded.
fn rec_codec(codec: Codec) -> Option<RecCodec> {
    match codec {
        Codec::Opus => Some(RecCodec::Opus),
        Codec::Vp8 => Some(RecCodec::Vp8),
        Codec::H264 => Some(RecCodec::H264),
        _ => None,
    }
}

/// The room as clients see it in a JoinResponse or RoomUpdate.
pub(super) fn room_info(name: &str, room: &Room) -> proto::Room {
    proto::Room {
        sid: room.sid.to_string(),
        name: name.to_owned(),
        creation_time: room.creation_ms / 1000,
        creation_time_ms: room.creation_ms,
        num_participants: room.members.len() as u32,
        empty_timeout: 300,
        departure_timeout: 20,
        active_recording: room.recording.is_some(),
        ..Default::default()
    }
}

impl Engine {
    /// Record `room` as `recording` from now on, or stop. A room without a session keeps it
    /// for when its first session comes (this shard may be the one it lands on).
    pub(super) fn set_recording(&mut self, room: String, recording: Option<String>, now: Instant) {
        let recording: Option<Arc<str>> = recording.map(Arc::from);
        match &recording {
            Some(id) => {
                self.recordings.insert(room.clone(), id.clone());
            }
            None => {
                self.recordings.remove(&room);
            }
        }
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if state.recording == recording {
            return;
        }
        state.recording = recording;
        let update = room_info(&room, state);
        let members = state.members.clone();
        for conn in members {
            // A new recording starts every track afresh (a keyframe first).
            if let Some(participant) = self.participants.get_mut(&conn) {
                for track in &mut participant.published {
                    track.recorder = None;
                }
            }
            self.send(
                conn,
                Resp::RoomUpdate(proto::RoomUpdate {
                    room: Some(update.clone()),
                }),
            );
        }
        self.process(now);
    }

    /// One packet of a recorded room's track `key`, published by `conn`: through the track's
    /// recorder to an [`Output::Record`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_packet(
        &mut self,
        conn: ConnId,
        key: TrackKey,
        recording: &Arc<str>,
        codec: Codec,
        frame: FrameMeta,
        target: Option<Rid>,
        packet: &RtpPacket,
        now: Instant,
    ) {
        let Some(participant) = self.participants.get_mut(&conn) else {
            return;
        };
        let room = &participant.room;
        let (identity, name) = (&participant.info.identity, &participant.info.name);
        let Some(track) = participant.published.iter_mut().find(|t| t.key == key) else {
            return;
        };
        // A change of the room's recording drops every recorder (`set_recording`): one here is
        // this recording's.
        if track.recorder.is_none() {
            let Some(codec) = rec_codec(codec) else {
                return;
            };
            let video = track.kind == MediaKind::Video;
            track.recorder = Some(Recorder {
                track: Arc::new(RecTrack {
                    recording: recording.to_string(),
                    room: room.clone(),
                    track_sid: track.sid.to_string(),
                    identity: identity.clone(),
                    name: name.clone(),
                    kind: if video {
                        RecKind::Video
                    } else {
                        RecKind::Audio
                    },
                    codec,
                    clock_rate: frame.clock_rate,
                }),
                forwarder: LayerForwarder::new(video),
                seq: SeqRewriter::default(),
            });
        }
        let Some(recorder) = track.recorder.as_mut() else {
            return;
        };
        let before = recorder.forwarder.current();
        let time = match recorder.forwarder.on_frame(frame, target) {
            Verdict::Forward(time) => time,
            Verdict::NeedKeyframe(rid) => {
                self.request_keyframe(conn, key, rid, now);
                return;
            }
            Verdict::Drop => return,
        };
        let seq = *packet.seq_no;
        if recorder.forwarder.current() != before {
            recorder.seq.start(seq);
        }
        let Some(seq) = recorder.seq.rewrite(seq) else {
            return;
        };
        self.outputs.push_back(Output::Record(RecPacket {
            track: recorder.track.clone(),
            seq,
            time,
            marker: packet.header.marker,
            payload: packet.payload.clone(),
            at: now,
        }));
    }

    /// The recording of `track_sid` in `room` lost a frame: ask for a keyframe of the layer it
    /// records.
    pub(super) fn record_keyframe(&mut self, room: &str, track_sid: &str, now: Instant) {
        let found = self.members(room).into_iter().find_map(|conn| {
            let participant = self.participants.get(&conn)?;
            let track = participant
                .published
                .iter()
                .find(|t| t.sid.as_str() == track_sid)?;
            let layer = track
                .recorder
                .as_ref()
                .and_then(|r| r.forwarder.current())
                .flatten();
            Some((conn, track.key, layer))
        });
        if let Some((conn, key, layer)) = found {
            self.request_keyframe(conn, key, layer, now);
        }
    }
}
