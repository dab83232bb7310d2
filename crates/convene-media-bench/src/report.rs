//! What participants recorded, and the figures computed from it for one measurement window:
//! loss and delay per publisher's track, summed over every receiver of it.

use std::ops::Range;

use crate::payload::Kind;

/// One frame a participant received (after str0m reassembled it from RTP packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The publisher that sent it (its number in the run).
    pub source: u32,
    pub kind: Kind,
    /// The quality of the video layer it came from (0 low, 1 medium, 2 high; 0 for audio).
    pub layer: u8,
    /// The publisher's counter for this kind.
    pub counter: u64,
    /// Receive time minus the send time the publisher stamped into the frame.
    pub delay_us: u32,
    /// The RTP sequence numbers (extended) of the packets the server sent this frame in.
    pub first_seq: u64,
    pub packets: u32,
}

/// Counters of the frames one publisher sent during the window, per kind: `start..end`.
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

    /// Frames sent in the window, all kinds.
    fn frames(&self) -> u64 {
        (self.video.end - self.video.start) + (self.audio.end - self.audio.start)
    }
}

/// What one participant received, and the publishers it should have heard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recording {
    /// The sources whose every frame of the window it should have received.
    pub hears: Vec<u32>,
    pub records: Vec<Received>,
}

/// Loss and delay over all participants for one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Frames the participants should have received (for each, the frames its heard publishers
    /// sent in the window).
    pub frames_expected: u64,
    pub frames_received: u64,
    /// RTP packets the participants received for frames of the window.
    pub packets_received: u64,
    /// RTP packets the server sent for those frames, from the span of sequence numbers of each
    /// track each participant received.
    pub packets_expected: u64,
    /// Participants that missed at least one frame.
    pub subscribers_with_loss: usize,
    /// Worst single participant's frame loss, in percent.
    pub worst_frame_loss_pct: f64,
    /// Sorted delays (microseconds) of every received frame of the window, all kinds.
    pub delays_us: Vec<u32>,
    /// The same for video frames only and audio frames only.
    pub video_delays_us: Vec<u32>,
    pub audio_delays_us: Vec<u32>,
    /// Video frames received from each layer, by quality (low, medium, high).
    pub video_by_layer: [u64; 3],
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

/// Fold every participant's records into the window's figures, `windows[source]` being what
/// publisher `source` sent in it; frames of publishers a participant does not hear are not
/// counted. A frame counts once per receiver, the first time it came, even if it came again:
/// in the same packets, or in other packets (Janus forwards the frame again from the simulcast
/// layer it switches a subscriber to). The packets of such a second delivery are neither
/// credited to the server (packets received) nor, since they are in the span of the track's
/// sequence numbers, counted as lost.
pub fn deliver(recordings: &[Recording], windows: &[Window]) -> Delivery {
    let mut out = Delivery::default();
    for recording in recordings {
        let expected: u64 = recording
            .hears
            .iter()
            .map(|&source| windows[source as usize].frames())
            .sum();
        let mut in_window: Vec<&Received> = recording
            .records
            .iter()
            .filter(|r| {
                recording.hears.contains(&r.source)
                    && windows[r.source as usize]
                        .range(r.kind)
                        .contains(&r.counter)
            })
            .collect();
        // A stable sort: each frame's deliveries stay in arrival order.
        in_window.sort_by_key(|r| (r.source, r.kind, r.counter));
        // Every delivery in distinct packets.
        in_window.dedup_by_key(|r| (r.source, r.kind, r.counter, r.first_seq));
        let mut frames = in_window.clone();
        frames.dedup_by_key(|r| (r.source, r.kind, r.counter));
        out.frames_expected += expected;
        out.frames_received += frames.len() as u64;
        let missed = expected.saturating_sub(frames.len() as u64);
        if missed > 0 {
            out.subscribers_with_loss += 1;
            out.worst_frame_loss_pct = out.worst_frame_loss_pct.max(pct(missed, expected));
        }
        let packets = |records: &[&Received]| records.iter().map(|r| u64::from(r.packets)).sum();
        let credited: u64 = packets(&frames);
        let again: u64 = packets(&in_window) - credited;
        out.packets_received += credited;
        // One track per publisher and kind, in order after the sort: the span of its sequence
        // numbers, less the packets of frames that came again.
        let span: u64 = in_window
            .chunk_by(|a, b| (a.source, a.kind) == (b.source, b.kind))
            .map(|track| {
                let start = track.iter().map(|r| r.first_seq).min().unwrap_or(0);
                let end = track.iter().map(|r| r.first_seq + u64::from(r.packets));
                end.max().unwrap_or(0).saturating_sub(start)
            })
            .sum();
        out.packets_expected += span.saturating_sub(again);
        for r in &frames {
            out.delays_us.push(r.delay_us);
            match r.kind {
                Kind::Video => {
                    out.video_delays_us.push(r.delay_us);
                    if let Some(count) = out.video_by_layer.get_mut(usize::from(r.layer)) {
                        *count += 1;
                    }
                }
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
            layer: 2,
            ..from(0, kind, counter, first_seq, packets, delay_us)
        }
    }

    fn from(
        source: u32,
        kind: Kind,
        counter: u64,
        first_seq: u64,
        packets: u32,
        delay_us: u32,
    ) -> Received {
        Received {
            source,
            kind,
            layer: 0,
            counter,
            delay_us,
            first_seq,
            packets,
        }
    }

    fn hearing(hears: &[u32], records: Vec<Received>) -> Recording {
        Recording {
            hears: hears.to_vec(),
            records,
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
        // The publisher hears nobody: it counts for nothing.
        let recordings = [
            hearing(&[0], full),
            hearing(&[0], lossy),
            hearing(&[], vec![]),
        ];
        let d = deliver(&recordings, &[window]);
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
        assert_eq!(d.video_by_layer, [0, 0, 5]);
        assert_eq!(d.audio_delays_us, vec![500, 600, 700]);
        assert_eq!(percentile(&d.delays_us, 50.0), 1000);
        assert_eq!(percentile(&d.delays_us, 99.0), 5000);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn counts_each_publishers_tracks_against_its_own_window() {
        // Two publishers whose counters are at different places when the window opens.
        let windows = [
            Window {
                video: 10..12,
                audio: 20..21,
            },
            Window {
                video: 500..503,
                audio: 800..801,
            },
        ];
        // Participant 2 hears both: all of 0's frames; of 1's, video 501 is lost. Each track's
        // packets are numbered by its own down track.
        let both = vec![
            from(0, Kind::Video, 10, 100, 4, 1000),
            from(0, Kind::Video, 11, 104, 4, 1000),
            from(0, Kind::Audio, 20, 30, 1, 1000),
            from(1, Kind::Video, 500, 7000, 3, 2000),
            from(1, Kind::Video, 502, 7006, 3, 9000),
            from(1, Kind::Audio, 800, 60, 1, 2000),
        ];
        // Publisher 0 hears only 1, all of it (a stray frame of its own does not count), and
        // from a higher layer from frame 501 on.
        let medium = |r: Received| Received { layer: 1, ..r };
        let zero = vec![
            from(0, Kind::Audio, 20, 30, 1, 1),
            from(1, Kind::Video, 500, 9000, 3, 3000),
            medium(from(1, Kind::Video, 501, 9003, 3, 3000)),
            medium(from(1, Kind::Video, 502, 9006, 3, 3000)),
            from(1, Kind::Audio, 800, 90, 1, 3000),
        ];
        let d = deliver(&[hearing(&[0, 1], both), hearing(&[1], zero)], &windows);
        assert_eq!(d.frames_expected, (3 + 4) + 4);
        assert_eq!(d.frames_received, 6 + 4);
        assert_eq!(d.subscribers_with_loss, 1);
        assert!((d.worst_frame_loss_pct - 100.0 / 7.0).abs() < 1e-9);
        // Participant 2 lost the 3 packets of video 501, seen in the span of its sequence
        // numbers; participant 0 lost nothing.
        assert_eq!(d.packets_received, (8 + 1 + 6 + 1) + (9 + 1));
        assert_eq!(d.packets_expected, (8 + 1 + 9 + 1) + (9 + 1));
        assert_eq!(d.delays_us.len(), 10);
        assert_eq!(d.delays_us.first(), Some(&1000));
        assert_eq!(d.delays_us.last(), Some(&9000));
        assert_eq!(d.video_by_layer, [2 + 2 + 1, 2, 0]);
    }

    #[test]
    fn a_frame_sent_again_from_another_layer_counts_once_and_is_not_lost() {
        let window = Window {
            video: 10..13,
            audio: 0..0,
        };
        let on = |layer, r: Received| Received { layer, ..r };
        // As Janus switches the subscriber from layer 0 to layer 2, frame 11 comes from both
        // (in other packets of the same down track), the first one earlier.
        let records = vec![
            on(0, frame(Kind::Video, 10, 50, 1, 1000)),
            on(0, frame(Kind::Video, 11, 51, 1, 1000)),
            on(2, frame(Kind::Video, 11, 52, 4, 3000)),
            on(2, frame(Kind::Video, 12, 56, 4, 1000)),
        ];
        let d = deliver(&[hearing(&[0], records)], &[window]);
        assert_eq!((d.frames_expected, d.frames_received), (3, 3));
        assert_eq!(d.subscribers_with_loss, 0);
        // Credited: the first delivery of each frame; the second's 4 packets are not lost.
        assert_eq!(d.packets_received, 1 + 1 + 4);
        assert_eq!(d.packets_expected, 10 - 4);
        assert_eq!(d.packet_loss_pct(), 0.0);
        assert_eq!(d.delays_us, vec![1000, 1000, 1000]);
        assert_eq!(d.video_by_layer, [2, 0, 1]);
    }
}
