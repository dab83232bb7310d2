//! Pure per-subscriber forwarding rules: which simulcast layer to send, when
//! to switch (only on a keyframe of the new layer) and how to rewrite RTP
//! timestamps, sequence numbers and VP8 picture ids so the subscriber sees one
//! continuous stream.
//!
//! The engine forwards RTP packets as they arrive (str0m's RTP mode), so each
//! rule applies per packet: a "frame" here is one packet, and `keyframe` means
//! the packet starts a keyframe.

use std::time::{Duration, Instant};

use str0m::format::{Codec, detect_h264_nalu};
use str0m::media::Rid;
use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// How long a simulcast layer counts as "available" after its last frame.
pub const LAYER_WINDOW: Duration = Duration::from_millis(1500);

/// Rank of a simulcast layer: higher is better quality. `None` (no simulcast) ranks top.
pub fn layer_rank(rid: Option<Rid>) -> u8 {
    match rid.as_deref() {
        None => 4,
        Some("f") => 3,
        Some("h") => 2,
        Some("q") => 1,
        Some(_) => 0,
    }
}

/// Layers recently seen on one incoming track, with the time of their last frame.
#[derive(Debug, Default, Clone)]
pub struct LayerSet {
    seen: Vec<(Option<Rid>, Instant)>,
}

impl LayerSet {
    /// Record a frame of layer `rid` at `now`.
    pub fn saw(&mut self, rid: Option<Rid>, now: Instant) {
        match self.seen.iter_mut().find(|(r, _)| *r == rid) {
            Some(entry) => entry.1 = now,
            None => self.seen.push((rid, now)),
        }
    }

    /// The layers seen within [`LAYER_WINDOW`] of `now`.
    pub fn recent(&self, now: Instant) -> impl Iterator<Item = Option<Rid>> + Clone + '_ {
        self.seen
            .iter()
            .filter(move |(_, at)| now.saturating_duration_since(*at) <= LAYER_WINDOW)
            .map(|(rid, _)| *rid)
    }

    /// The best layer seen within [`LAYER_WINDOW`] of `now`, if any.
    pub fn best(&self, now: Instant) -> Option<Option<Rid>> {
        self.seen
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(*at) <= LAYER_WINDOW)
            .max_by_key(|(rid, _)| layer_rank(*rid))
            .map(|(rid, _)| *rid)
    }
}

/// Keeps outgoing RTP timestamps continuous when the source layer changes.
#[derive(Debug, Default, Clone)]
pub struct TimestampRewriter {
    offset: i64,
    last_out: Option<(u64, Instant)>,
}

impl TimestampRewriter {
    /// Map an input timestamp of the current layer to the output timeline.
    pub fn rewrite(&mut self, input: u64, wallclock: Instant) -> u64 {
        let out = (input as i64).saturating_add(self.offset).max(0) as u64;
        self.last_out = Some((out, wallclock));
        out
    }

    /// Start mapping a new layer whose next frame has timestamp `input` at
    /// `wallclock`: the output continues from the last output, advanced by
    /// the wall-clock gap (at least one tick), at `clock_rate` Hz.
    pub fn rebase(&mut self, input: u64, wallclock: Instant, clock_rate: u32) {
        match self.last_out {
            None => self.offset = 0,
            Some((last, at)) => {
                let gap = wallclock.saturating_duration_since(at);
                let ticks = (gap.as_micros() as u64 * clock_rate as u64 / 1_000_000).max(1);
                self.offset = (last + ticks) as i64 - input as i64;
            }
        }
    }
}

/// Whether an RTP payload of `codec` starts a keyframe, where a layer switch may happen. VP8: the
/// first packet of a key picture (`vp8` is its parsed descriptor). H.264: the packet with the
/// sequence parameter set a keyframe starts with (alone, in a STAP-A or a first FU-A fragment), or
/// an IDR slice when the encoder sends none. Audio frames never wait.
pub fn starts_keyframe(codec: Codec, payload: &[u8], vp8: Option<&Vp8Descriptor>) -> bool {
    const H264_IDR: u8 = 5;
    const H264_SPS: u8 = 7;
    match codec {
        Codec::Vp8 => vp8.is_some_and(|d| d.starts_keyframe(payload)),
        Codec::H264 => detect_h264_nalu(payload, H264_SPS) || detect_h264_nalu(payload, H264_IDR),
        _ => false,
    }
}

/// Keeps outgoing RTP sequence numbers continuous when the forwarded layer changes: each layer
/// (or restart) is a *segment* mapped by a fixed offset onto the numbers after the last one sent.
#[derive(Debug, Default, Clone)]
pub struct SeqRewriter {
    offset: i64,
    /// The first input number of the current segment; earlier packets belong to the previous.
    start: u64,
    last_out: Option<u64>,
}

impl SeqRewriter {
    /// A segment starts at input `seq` (the first packet of a new layer). The first segment starts
    /// at `seq`'s low 16 bits: a receiver assumes a rollover counter of 0.
    pub fn start(&mut self, seq: u64) {
        let next = match self.last_out {
            Some(last) => last + 1,
            None => seq & 0xFFFF,
        };
        self.offset = next as i64 - seq as i64;
        self.start = seq;
    }

    /// The output number of input `seq`; `None` for a packet from before the segment began.
    pub fn rewrite(&mut self, seq: u64) -> Option<u64> {
        if seq < self.start {
            return None;
        }
        let out = (seq as i64 + self.offset) as u64;
        self.last_out = Some(self.last_out.map_or(out, |last| last.max(out)));
        Some(out)
    }
}

/// The VP8 payload descriptor fields that must stay continuous across layers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Ids {
    /// 15-bit picture id.
    pub picture_id: Option<u16>,
    pub tl0_pic_idx: Option<u8>,
}

impl Vp8Ids {
    /// The patch that writes these ids into a packet with `descriptor` as str0m serializes it;
    /// `None` when they do not fit the descriptor's fields.
    pub fn patch(self, descriptor: &Vp8Descriptor) -> Option<Vp8Patch> {
        let mut patch = descriptor.patch();
        if let Some(id) = self.picture_id {
            patch = patch.picture_id(id);
        }
        if let Some(idx) = self.tl0_pic_idx {
            patch = patch.tl0_pic_idx(idx);
        }
        patch.build().ok()
    }
}

/// Keeps VP8 picture ids and TL0PICIDX continuous when the forwarded layer changes (each
/// simulcast layer numbers its pictures on its own); a decoder treats a jump back as old frames.
#[derive(Debug, Default, Clone)]
pub struct Vp8Rewriter {
    offset: Vp8Offsets,
    last_out: Vp8Ids,
}

#[derive(Debug, Default, Clone, Copy)]
struct Vp8Offsets {
    picture_id: u16,
    tl0_pic_idx: u8,
}

const PICTURE_ID_MASK: u16 = 0x7FFF;

impl Vp8Rewriter {
    /// A segment starts with a packet carrying `ids`: its pictures follow the last one sent.
    pub fn start(&mut self, ids: Vp8Ids) {
        if let (Some(last), Some(first)) = (self.last_out.picture_id, ids.picture_id) {
            self.offset.picture_id = last.wrapping_add(1).wrapping_sub(first) & PICTURE_ID_MASK;
        }
        if let (Some(last), Some(first)) = (self.last_out.tl0_pic_idx, ids.tl0_pic_idx) {
            self.offset.tl0_pic_idx = last.wrapping_add(1).wrapping_sub(first);
        }
    }

    /// The ids to send for a packet carrying `ids`, or `None` when they stay as they are.
    pub fn rewrite(&mut self, ids: Vp8Ids) -> Option<Vp8Ids> {
        let out = Vp8Ids {
            picture_id: ids
                .picture_id
                .map(|id| id.wrapping_add(self.offset.picture_id) & PICTURE_ID_MASK),
            tl0_pic_idx: ids
                .tl0_pic_idx
                .map(|idx| idx.wrapping_add(self.offset.tl0_pic_idx)),
        };
        if out.picture_id.is_some() {
            self.last_out.picture_id = out.picture_id;
        }
        if out.tl0_pic_idx.is_some() {
            self.last_out.tl0_pic_idx = out.tl0_pic_idx;
        }
        (out != ids).then_some(out)
    }
}

/// One incoming RTP packet as the forwarding rules see it (`keyframe`: it starts a keyframe).
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    pub rid: Option<Rid>,
    /// RTP time in ticks of `clock_rate`.
    pub time: u64,
    pub clock_rate: u32,
    pub wallclock: Instant,
    pub keyframe: bool,
}

/// What to do with one incoming packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it with this (rewritten) RTP time.
    Forward(u64),
    /// Not for this subscriber.
    Drop,
    /// Not yet: the subscriber waits for a keyframe of this layer; ask the publisher for one.
    NeedKeyframe(Option<Rid>),
}

/// Forwarding state of one subscriber for one track.
#[derive(Debug, Clone)]
pub struct LayerForwarder {
    video: bool,
    current: Option<Option<Rid>>,
    rewriter: TimestampRewriter,
}

impl LayerForwarder {
    pub fn new(video: bool) -> Self {
        LayerForwarder {
            video,
            current: None,
            rewriter: TimestampRewriter::default(),
        }
    }

    /// The layer being forwarded, once one has started.
    pub fn current(&self) -> Option<Option<Rid>> {
        self.current
    }

    /// Forget the current layer, e.g. after a subscriber asked for a keyframe
    /// the publisher never sent: the next keyframe of the target restarts it.
    pub fn restart(&mut self) {
        self.current = None;
    }

    /// Decide about `frame` given the layer this subscriber should receive.
    pub fn on_frame(&mut self, frame: FrameMeta, target: Option<Rid>) -> Verdict {
        if !self.video {
            if self.current.is_none() {
                self.current = Some(frame.rid);
                self.rewriter
                    .rebase(frame.time, frame.wallclock, frame.clock_rate);
            }
            return Verdict::Forward(self.rewriter.rewrite(frame.time, frame.wallclock));
        }
        let on_current = self.current == Some(frame.rid);
        if frame.rid == target {
            if on_current {
                return Verdict::Forward(self.rewriter.rewrite(frame.time, frame.wallclock));
            }
            if frame.keyframe {
                self.current = Some(frame.rid);
                self.rewriter
                    .rebase(frame.time, frame.wallclock, frame.clock_rate);
                return Verdict::Forward(self.rewriter.rewrite(frame.time, frame.wallclock));
            }
            if self.current.is_none() {
                return Verdict::NeedKeyframe(target);
            }
            // Keep forwarding the old layer (handled when its frames come);
            // this frame is only a reminder that the target wants a keyframe.
            return Verdict::NeedKeyframe(target);
        }
        if on_current {
            return Verdict::Forward(self.rewriter.rewrite(frame.time, frame.wallclock));
        }
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(s: &str) -> Option<Rid> {
        Some(Rid::from(s))
    }

    fn frame(start: Instant, ms: u64, r: Option<Rid>, base: u64, keyframe: bool) -> FrameMeta {
        FrameMeta {
            rid: r,
            time: base + ms * 90,
            clock_rate: 90_000,
            wallclock: start + Duration::from_millis(ms),
            keyframe,
        }
    }

    #[test]
    fn best_layer_prefers_quality_and_expires() {
        let t0 = Instant::now();
        let mut set = LayerSet::default();
        set.saw(rid("q"), t0);
        set.saw(rid("f"), t0);
        set.saw(rid("h"), t0 + Duration::from_secs(1));
        assert_eq!(set.best(t0 + Duration::from_secs(1)), Some(rid("f")));
        // "f" last seen at t0 expires after the window; "h" remains.
        assert_eq!(set.best(t0 + Duration::from_millis(1600)), Some(rid("h")));
        assert_eq!(set.best(t0 + Duration::from_secs(10)), None);
    }

    #[test]
    fn waits_for_keyframe_before_starting() {
        let t0 = Instant::now();
        let mut fwd = LayerForwarder::new(true);
        assert_eq!(
            fwd.on_frame(frame(t0, 0, rid("h"), 1000, false), rid("h")),
            Verdict::NeedKeyframe(rid("h"))
        );
        assert_eq!(
            fwd.on_frame(frame(t0, 33, rid("q"), 5, true), rid("h")),
            Verdict::Drop
        );
        assert_eq!(
            fwd.on_frame(frame(t0, 66, rid("h"), 1000, true), rid("h")),
            Verdict::Forward(1000 + 66 * 90)
        );
    }

    #[test]
    fn timestamps_stay_continuous_across_layer_switches() {
        let t0 = Instant::now();
        let mut fwd = LayerForwarder::new(true);
        let q_base = 4_000_000_000u64; // layers have unrelated random bases
        let f_base = 17u64;
        let mut outputs = Vec::new();
        let mut push = |v: Verdict| {
            if let Verdict::Forward(t) = v {
                outputs.push(t)
            }
        };
        push(fwd.on_frame(frame(t0, 0, rid("q"), q_base, true), rid("q")));
        push(fwd.on_frame(frame(t0, 33, rid("q"), q_base, false), rid("q")));
        // Target moves to "f": old layer keeps flowing until "f" sends a keyframe.
        assert_eq!(
            fwd.on_frame(frame(t0, 66, rid("f"), f_base, false), rid("f")),
            Verdict::NeedKeyframe(rid("f"))
        );
        push(fwd.on_frame(frame(t0, 66, rid("q"), q_base, false), rid("f")));
        push(fwd.on_frame(frame(t0, 100, rid("f"), f_base, true), rid("f")));
        assert_eq!(fwd.current(), Some(rid("f")));
        // Frames of the old layer are dropped after the switch.
        assert_eq!(
            fwd.on_frame(frame(t0, 100, rid("q"), q_base, false), rid("f")),
            Verdict::Drop
        );
        push(fwd.on_frame(frame(t0, 133, rid("f"), f_base, false), rid("f")));
        // And back down to "q".
        push(fwd.on_frame(frame(t0, 166, rid("q"), q_base, true), rid("q")));
        push(fwd.on_frame(frame(t0, 200, rid("q"), q_base, false), rid("q")));

        assert_eq!(outputs.len(), 7);
        assert_eq!(outputs[0], q_base);
        for pair in outputs.windows(2) {
            assert!(pair[1] > pair[0], "not monotonic: {outputs:?}");
            // 30-40 ms steps at 90 kHz, never a jump by a random base.
            assert!(pair[1] - pair[0] <= 40 * 90, "jump: {outputs:?}");
        }
        // Output advances with wall-clock: 200 ms after the first frame.
        assert_eq!(outputs[6] - outputs[0], 200 * 90);
    }

    #[test]
    fn audio_passes_through_unchanged() {
        let t0 = Instant::now();
        let mut fwd = LayerForwarder::new(false);
        let f = FrameMeta {
            rid: None,
            time: 48_000,
            clock_rate: 48_000,
            wallclock: t0,
            keyframe: false,
        };
        assert_eq!(fwd.on_frame(f, None), Verdict::Forward(48_000));
    }

    #[test]
    fn sequence_numbers_continue_across_segments_and_drop_what_came_before() {
        let mut seq = SeqRewriter::default();
        // A long-running source (extended numbers past 65,535) starts the receiver at its low bits.
        seq.start(70_000);
        assert_eq!(seq.rewrite(70_000), Some(70_000 & 0xFFFF));
        assert_eq!(seq.rewrite(70_002), Some((70_000 & 0xFFFF) + 2));
        assert_eq!(
            seq.rewrite(70_001),
            Some((70_000 & 0xFFFF) + 1),
            "reordered"
        );
        assert_eq!(seq.rewrite(69_999), None, "from before the segment");
        // Another layer with unrelated numbers continues after the highest sent.
        seq.start(5);
        assert_eq!(seq.rewrite(5), Some((70_000 & 0xFFFF) + 3));
        assert_eq!(seq.rewrite(6), Some((70_000 & 0xFFFF) + 4));
        assert_eq!(seq.rewrite(4), None);
    }

    #[test]
    fn vp8_picture_ids_continue_across_layers() {
        let mut vp8 = Vp8Rewriter::default();
        let ids = |picture_id: u16, tl0: u8| Vp8Ids {
            picture_id: Some(picture_id),
            tl0_pic_idx: Some(tl0),
        };
        vp8.start(ids(32_000, 250));
        assert_eq!(
            vp8.rewrite(ids(32_000, 250)),
            None,
            "the first layer is sent as it is"
        );
        assert_eq!(vp8.rewrite(ids(32_767, 255)), None);
        // A new layer numbering from 10: continues at 0 (15 bits wrap) and 0 (8 bits wrap).
        vp8.start(ids(10, 3));
        assert_eq!(vp8.rewrite(ids(10, 3)), Some(ids(0, 0)));
        assert_eq!(vp8.rewrite(ids(11, 3)), Some(ids(1, 0)));
        // Back to the first layer: continues after the last sent, not where that layer was.
        vp8.start(ids(500, 7));
        assert_eq!(vp8.rewrite(ids(500, 7)), Some(ids(2, 1)));
        // Descriptors without the fields stay untouched.
        assert_eq!(vp8.rewrite(Vp8Ids::default()), None);
    }

    #[test]
    fn keyframes_are_found_in_vp8_and_h264_payloads() {
        // VP8: descriptor with S=1, partition 0, then a payload header with P=0 (key) or 1.
        let key = [0x10, 0x9c, 0x01, 0x2a];
        let delta = [0x10, 0x9d, 0x01, 0x2a];
        let continuation = [0x00, 0x9c, 0x01, 0x2a];
        let parse = |p: &[u8]| Vp8Descriptor::parse(p).ok();
        let vp8 = |p: &[u8]| starts_keyframe(Codec::Vp8, p, parse(p).as_ref());
        assert!(vp8(&key));
        assert!(!vp8(&delta));
        assert!(!vp8(&continuation), "not the first packet of the picture");
        // H.264: a STAP-A (24) holding SPS (0x67) and PPS (0x68); an IDR slice (0x65); a
        // non-IDR slice (0x41).
        let stap_a = [0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce];
        assert!(starts_keyframe(Codec::H264, &stap_a, None));
        assert!(starts_keyframe(Codec::H264, &[0x65, 0x88], None));
        assert!(!starts_keyframe(Codec::H264, &[0x41, 0x9a], None));
        assert!(!starts_keyframe(Codec::Opus, &[0x78, 0x01], None));
    }
}
