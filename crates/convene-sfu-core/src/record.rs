//! Recording, the pure part: what the engine hands the IO layer of each recorded track
//! ([`RecPacket`], one per forwarded RTP packet of the layer recorded), and the frame assembly
//! that turns those packets back into whole frames without decoding ([`assemble`]).
//!
//! The engine taps its forwarding loop: while a room is recorded, every published track gets a
//! recorder "down track" of its own that follows the best simulcast layer, switches only at a
//! keyframe and rewrites sequence numbers and timestamps like a subscriber's, so the packets
//! handed out here are one continuous stream per track. Writing them to files is IO
//! (`convene-sfu`'s recorder thread).

use std::sync::Arc;
use std::time::Instant;

pub mod assemble;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecKind {
    Audio,
    Video,
}

impl RecKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecKind::Audio => "audio",
            RecKind::Video => "video",
        }
    }
}

/// The codecs a recording keeps as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecCodec {
    Opus,
    Vp8,
    H264,
}

impl RecCodec {
    pub fn as_str(self) -> &'static str {
        match self {
            RecCodec::Opus => "opus",
            RecCodec::Vp8 => "vp8",
            RecCodec::H264 => "h264",
        }
    }
}

/// One recorded track: made once when the track's first packet is recorded, shared by each of
/// its packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecTrack {
    /// The recording's id (as the core named it).
    pub recording: String,
    pub room: String,
    /// The track's sid (`TR_...`): a track published again is a new track and a new file.
    pub track_sid: String,
    pub identity: String,
    /// The participant's display name at the time.
    pub name: String,
    pub kind: RecKind,
    pub codec: RecCodec,
    /// RTP clock rate of `RecPacket::time` (48 000 for Opus, 90 000 for video).
    pub clock_rate: u32,
}

/// One RTP packet of a recorded track, as forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecPacket {
    pub track: Arc<RecTrack>,
    /// Extended sequence number, continuous across layer switches (the recorder's own
    /// rewriting): a gap is a lost packet.
    pub seq: u64,
    /// Extended RTP time in `track.clock_rate` units, continuous across layer switches.
    pub time: u64,
    /// The RTP marker bit (the last packet of a video frame).
    pub marker: bool,
    /// The RTP payload as received (VP8 payload descriptor or H.264 NAL units included).
    pub payload: Arc<[u8]>,
    /// When the SFU received it.
    pub at: Instant,
}
