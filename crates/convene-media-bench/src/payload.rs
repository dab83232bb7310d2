//! Synthetic media the publisher sends: VP8 frames and Opus packets that a depacketizer accepts
//! (a VP8 frame tag with the keyframe bit and start code, an Opus TOC byte) and that carry a
//! bench header (publisher, kind, per-kind sequence counter, send time) so subscribers can
//! measure loss and delay per publisher's track.

/// Which stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Video,
    Audio,
}

/// What the publisher wrote into a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's number in its run (0 for the only publisher of the fan-out).
    pub source: u32,
    pub kind: Kind,
    /// The quality of the video layer it was sent on (LiveKit's `VideoQuality`: 0 low, 1
    /// medium, 2 high, which a track of one layer is); 0 for audio.
    pub layer: u8,
    /// 0, 1, 2, ... per publisher and kind, in send order (the same on every simulcast layer).
    pub counter: u64,
    /// Nanoseconds since the bench's clock epoch (the same process measures both ends).
    pub sent_ns: u64,
}

const MAGIC: &[u8; 4] = b"CVMB";
/// Bench header: magic, kind, layer, source, counter, send time.
const HEADER_LEN: usize = 4 + 1 + 1 + 4 + 8 + 8;
/// VP8: 3-byte frame tag + keyframe start code and dimensions (7 bytes), then the header.
const VIDEO_HEADER_AT: usize = 10;
/// Opus: one TOC byte, then the header.
const AUDIO_HEADER_AT: usize = 1;
/// Smallest frames that hold the header.
pub const MIN_VIDEO_BYTES: usize = VIDEO_HEADER_AT + HEADER_LEN;
pub const MIN_AUDIO_BYTES: usize = AUDIO_HEADER_AT + HEADER_LEN;

fn write_header(out: &mut [u8], stamp: Stamp) {
    out[..4].copy_from_slice(MAGIC);
    out[4] = match stamp.kind {
        Kind::Video => b'V',
        Kind::Audio => b'A',
    };
    out[5] = stamp.layer;
    out[6..10].copy_from_slice(&stamp.source.to_le_bytes());
    out[10..18].copy_from_slice(&stamp.counter.to_le_bytes());
    out[18..26].copy_from_slice(&stamp.sent_ns.to_le_bytes());
}

/// A VP8 frame of `len` bytes (at least [`MIN_VIDEO_BYTES`]) of a `width` x `height` picture.
///
/// The 3-byte frame tag has P = 0 on keyframes (what receivers, str0m included, look at), the
/// show-frame bit, and a first-partition size; keyframes carry the start code 9d 01 2a and the
/// picture size. The rest is a deterministic filler.
pub fn video_frame(
    stamp: Stamp,
    keyframe: bool,
    len: usize,
    (width, height): (u16, u16),
) -> Vec<u8> {
    let len = len.max(MIN_VIDEO_BYTES);
    let mut frame = vec![0u8; len];
    let first_partition = ((len - VIDEO_HEADER_AT) as u32).min(0x7_ffff);
    let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
    frame[..3].copy_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        frame[3..6].copy_from_slice(&[0x9d, 0x01, 0x2a]);
        frame[6..8].copy_from_slice(&width.to_le_bytes());
        frame[8..10].copy_from_slice(&height.to_le_bytes());
    }
    write_header(&mut frame[VIDEO_HEADER_AT..], stamp);
    fill(&mut frame[MIN_VIDEO_BYTES..], stamp.counter);
    frame
}

/// An Opus packet of `len` bytes: TOC byte for one 20 ms CELT fullband frame, then the header.
pub fn audio_frame(stamp: Stamp, len: usize) -> Vec<u8> {
    let len = len.max(MIN_AUDIO_BYTES);
    let mut frame = vec![0u8; len];
    frame[0] = 31 << 3; // config 31: CELT FB 20 ms, mono, one frame
    write_header(&mut frame[AUDIO_HEADER_AT..], stamp);
    fill(&mut frame[MIN_AUDIO_BYTES..], stamp.counter);
    frame
}

fn fill(bytes: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// The bench header of a received frame, if it has one at the place its kind puts it.
pub fn parse(kind: Kind, frame: &[u8]) -> Option<Stamp> {
    let at = match kind {
        Kind::Video => VIDEO_HEADER_AT,
        Kind::Audio => AUDIO_HEADER_AT,
    };
    let header = frame.get(at..at + HEADER_LEN)?;
    if &header[..4] != MAGIC {
        return None;
    }
    let found = match header[4] {
        b'V' => Kind::Video,
        b'A' => Kind::Audio,
        _ => return None,
    };
    if found != kind {
        return None;
    }
    Some(Stamp {
        source: u32::from_le_bytes(header[6..10].try_into().ok()?),
        kind,
        layer: header[5],
        counter: u64::from_le_bytes(header[10..18].try_into().ok()?),
        sent_ns: u64::from_le_bytes(header[18..26].try_into().ok()?),
    })
}

/// Frame sizes for a target bitrate: `fps` frames a second, a keyframe every `gop` frames that
/// is `key_ratio` times the size of a delta frame. Returns (keyframe bytes, delta frame bytes).
pub fn video_sizes(bits_per_second: u64, fps: u32, gop: u32, key_ratio: u32) -> (usize, usize) {
    let bytes_per_gop = bits_per_second / 8 * u64::from(gop) / u64::from(fps.max(1));
    let units = u64::from(key_ratio) + u64::from(gop.saturating_sub(1));
    let delta = (bytes_per_gop / units.max(1)) as usize;
    (
        (delta * key_ratio as usize).max(MIN_VIDEO_BYTES),
        delta.max(MIN_VIDEO_BYTES),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_frames_carry_the_stamp_and_the_keyframe_bit() {
        let stamp = Stamp {
            source: 7,
            kind: Kind::Video,
            layer: 1,
            counter: 41,
            sent_ns: 123_456_789,
        };
        let key = video_frame(stamp, true, 30_000, (640, 360));
        let delta = video_frame(
            Stamp {
                counter: 42,
                ..stamp
            },
            false,
            6_000,
            (640, 360),
        );
        assert_eq!((key.len(), delta.len()), (30_000, 6_000));
        // VP8 frame tag: P bit clear on keyframes only; keyframes have the start code.
        assert_eq!(key[0] & 1, 0);
        assert_eq!(delta[0] & 1, 1);
        assert_eq!(&key[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(&key[6..10], &[0x80, 0x02, 0x68, 0x01]);
        assert_eq!(parse(Kind::Video, &key), Some(stamp));
        assert_eq!(parse(Kind::Video, &delta).map(|s| s.counter), Some(42));
        // Not an audio frame, and a truncated frame has no stamp.
        assert_eq!(parse(Kind::Audio, &key), None);
        assert_eq!(parse(Kind::Video, &key[..20]), None);
    }

    #[test]
    fn audio_frames_carry_the_stamp() {
        let stamp = Stamp {
            source: 3,
            kind: Kind::Audio,
            layer: 0,
            counter: 7,
            sent_ns: 99,
        };
        let frame = audio_frame(stamp, 80);
        assert_eq!(frame.len(), 80);
        assert_eq!(frame[0], 0xf8);
        assert_eq!(parse(Kind::Audio, &frame), Some(stamp));
        assert_eq!(parse(Kind::Video, &frame), None);
        // Too small a size still yields a frame that holds the header.
        assert_eq!(parse(Kind::Audio, &audio_frame(stamp, 3)), Some(stamp));
    }

    #[test]
    fn sizes_add_up_to_the_bitrate() {
        let (key, delta) = video_sizes(1_500_000, 30, 60, 5);
        let per_gop = key + 59 * delta;
        // Two seconds of 1.5 Mbps is 375 000 bytes; integer division loses at most a few.
        assert!((374_900..=375_000).contains(&per_gop), "{per_gop}");
        assert_eq!(key, 5 * delta);
    }
}
