//! What subscribers recorded, and the figures computed from it for one measurement window.

use std::ops::Range;

use crate::payload::Kind;

/// One frame a subscriber received (after str0m reassembled it from RTP packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub kind: Kind,
    /// The publisher's counter for this kind.
    pub counter: u64,
    /// Receive time minus the send time the publisher stamped into the frame.
    pub delay_us: u32,
    /// The RTP sequence numbers (extended) of the packets the server sent this frame in.
    pub first_seq: u64,
    pub packets: u32,
}

/// Counters of frames sent during the window, per kind: `start..end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub video: Range<u64>,
    pub audio: Range<u64>,
}

impl Window {
    fn range(&self, kind: Kind) -> &Range<u64> {
        match kind {
            Kind::Video => &self.video,
            Kind::Audio => &self.audio,
        }
    }
}

/// Loss and delay over all subscribers for one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Frames the subscribers should have received (frames sent in the window x subscribers).
    pub frames_expected: u64,
    pub frames_received: u64,
    /// RTP packets the subscribers received for frames of the window.
    pub packets_received: u64,
    /// RTP packets the server sent for those frames, from the span of sequence numbers.
    pub packets_expected: u64,
    /// Subscribers that missed at least one frame.
    pub subscribers_with_loss: usize,
    /// Worst single subscriber's frame loss, in percent.
    pub worst_frame_loss_pct: f64,
    /// Sorted delays (microseconds) of every received frame of the window, all kinds.
    pub delays_us: Vec<u32>,
    /// The same for video frames only and audio frames only.
    pub video_delays_us: Vec<u32>,
    pub audio_delays_us: Vec<u32>,
}

impl Delivery {
    pub fn frame_loss_pct(&self) -> f64 {
        pct(
            self.frames_expected.saturating_sub(self.frames_received),
            self.frames_expected,
        )
    }

    pub fn packet_loss_pct(&self) -> f64 {
        pct(
            self.packets_expected.saturating_sub(self.packets_received),
            self.packets_expected,
        )
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The value at percentile `p` (0-100) of sorted `values` (nearest rank), 0 if empty.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Fold every subscriber's records into the window's figures. A frame counts once per
/// subscriber even if it was somehow delivered twice.
pub fn deliver(subscribers: &[Vec<Received>], window: &Window) -> Delivery {
    let mut out = Delivery::default();
    let per_subscriber =
        (window.video.end - window.video.start) + (window.audio.end - window.audio.start);
    for records in subscribers {
        let mut in_window: Vec<&Received> = records
            .iter()
            .filter(|r| window.range(r.kind).contains(&r.counter))
            .collect();
        in_window.sort_by_key(|r| (r.kind, r.counter));
        in_window.dedup_by_key(|r| (r.kind, r.counter));
        out.frames_expected += per_subscriber;
        out.frames_received += in_window.len() as u64;
        let missed = per_subscriber.saturating_sub(in_window.len() as u64);
        if missed > 0 {
            out.subscribers_with_loss += 1;
            out.worst_frame_loss_pct = out.worst_frame_loss_pct.max(pct(missed, per_subscriber));
        }
        for kind in [Kind::Video, Kind::Audio] {
            let frames: Vec<&&Received> = in_window.iter().filter(|r| r.kind == kind).collect();
            let (Some(first), Some(last)) = (frames.first(), frames.last()) else {
                continue;
            };
            out.packets_received += frames.iter().map(|r| u64::from(r.packets)).sum::<u64>();
            let end = last.first_seq + u64::from(last.packets);
            out.packets_expected += end.saturating_sub(first.first_seq);
        }
        for r in &in_window {
            out.delays_us.push(r.delay_us);
            match r.kind {
                Kind::Video => out.video_delays_us.push(r.delay_us),
                Kind::Audio => out.audio_delays_us.push(r.delay_us),
            }
        }
    }
    out.delays_us.sort_unstable();
    out.video_delays_us.sort_unstable();
    out.audio_delays_us.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, counter: u64, first_seq: u64, packets: u32, delay_us: u32) -> Received {
        Received {
            kind,
            counter,
            delay_us,
            first_seq,
            packets,
        }
    }

    #[test]
    fn counts_loss_packets_and_delay_inside_the_window_only() {
        let window = Window {
            video: 10..13,
            audio: 100..102,
        };
        // Subscriber 1: everything, plus frames outside the window and a duplicate.
        let full = vec![
            frame(Kind::Video, 9, 45, 5, 999_999),
            frame(Kind::Video, 10, 50, 5, 1000),
            frame(Kind::Video, 11, 55, 2, 2000),
            frame(Kind::Video, 11, 55, 2, 2000),
            frame(Kind::Video, 12, 57, 3, 3000),
            frame(Kind::Audio, 100, 7, 1, 500),
            frame(Kind::Audio, 101, 8, 1, 600),
            frame(Kind::Audio, 102, 9, 1, 999_999),
        ];
        // Subscriber 2: lost video frame 11 (2 packets) and audio 101.
        let lossy = vec![
            frame(Kind::Video, 10, 50, 5, 4000),
            frame(Kind::Video, 12, 57, 3, 5000),
            frame(Kind::Audio, 100, 7, 1, 700),
        ];
        let d = deliver(&[full, lossy], &window);
        assert_eq!(d.frames_expected, 10);
        assert_eq!(d.frames_received, 8);
        assert_eq!(d.subscribers_with_loss, 1);
        assert!((d.worst_frame_loss_pct - 40.0).abs() < 1e-9);
        assert!((d.frame_loss_pct() - 20.0).abs() < 1e-9);
        // Packets: 10 video + 2 audio for the first, 8 video + 1 audio for the second; the
        // second's sequence span still shows the 2 missing video packets.
        assert_eq!(d.packets_received, 12 + 9);
        assert_eq!(d.packets_expected, 12 + 10 + 1);
        assert_eq!(
            d.delays_us,
            vec![500, 600, 700, 1000, 2000, 3000, 4000, 5000]
        );
        assert_eq!(d.video_delays_us.len(), 5);
        assert_eq!(d.audio_delays_us, vec![500, 600, 700]);
        assert_eq!(percentile(&d.delays_us, 50.0), 1000);
        assert_eq!(percentile(&d.delays_us, 99.0), 5000);
        assert_eq!(percentile(&[], 99.0), 0);
    }
}
