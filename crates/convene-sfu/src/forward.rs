//! Pure per-subscriber forwarding rules: which simulcast layer to send, when
//! to switch (only on a keyframe of the new layer) and how to rewrite RTP
//! timestamps so the subscriber sees one continuous stream.
//!
//! Sequence numbers of the outgoing stream are assigned by str0m when it
//! packetizes each forwarded frame, so they are continuous by construction;
//! the timestamps come from the incoming layer and are rewritten here.

use std::time::{Duration, Instant};

use str0m::media::Rid;

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

/// One incoming frame as the forwarding rules see it.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    pub rid: Option<Rid>,
    /// RTP time in ticks of `clock_rate`.
    pub time: u64,
    pub clock_rate: u32,
    pub wallclock: Instant,
    pub keyframe: bool,
}

/// What to do with one incoming frame for one subscriber.
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
}
