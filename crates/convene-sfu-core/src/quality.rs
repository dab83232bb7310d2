//! Connection quality, pure: a [`LinkWindow`] collects what the engine learns of one
//! participant's links during a window (packet loss, jitter and round-trip time, from str0m's
//! RTCP-based statistics of its publisher and subscriber connections), and [`rate`] turns a
//! window into a score (1 to 5, like a mean opinion score) and LiveKit's `ConnectionQuality`.
//! The score is a simplified E-model (ITU-T G.107): delay and jitter cost a little, loss a lot.
//! Loss is known two ways: the fraction the RTCP receiver reports carry, and the NACKs a stream
//! saw against the packets it carried ([`NackMarks`]); the window keeps the worse.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use livekit_protocol as proto;

/// Scores at or above these are excellent, good; below is poor.
pub const EXCELLENT: f32 = 4.1;
pub const GOOD: f32 = 3.6;
/// A participant from whom nothing at all arrived for this long is lost.
pub const LOST_AFTER: Duration = Duration::from_secs(8);

/// The worst of what one participant's links showed during a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkWindow {
    /// Fraction of packets lost (0..=1), the worst stream's.
    pub loss: Option<f32>,
    pub jitter: Option<Duration>,
    pub rtt: Option<Duration>,
}

impl LinkWindow {
    /// Loss seen on a stream (either direction), as a fraction 0..=1.
    pub fn loss(&mut self, fraction: f32) {
        let fraction = fraction.clamp(0.0, 1.0);
        self.loss = Some(self.loss.map_or(fraction, |l| l.max(fraction)));
    }

    pub fn jitter(&mut self, jitter: Duration) {
        self.jitter = Some(self.jitter.map_or(jitter, |j| j.max(jitter)));
    }

    pub fn rtt(&mut self, rtt: Duration) {
        self.rtt = Some(self.rtt.map_or(rtt, |r| r.max(rtt)));
    }

    /// Nothing was measured in this window.
    pub fn is_empty(&self) -> bool {
        self.loss.is_none() && self.jitter.is_none() && self.rtt.is_none()
    }
}

/// Each stream's running NACK and packet counts as last seen, so that a statistics report (which
/// carries totals since the stream began) yields the share of its packets NACKed since the last
/// report. A NACK names at least one lost packet, so that share is a floor of the loss the
/// receiver saw, and it arrives with every report, also where receiver reports are sparse.
#[derive(Debug, Clone)]
pub struct NackMarks<K> {
    last: HashMap<K, (u64, u64)>,
}

impl<K> Default for NackMarks<K> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

/// Fewer packets than this since the last report say too little to count NACKs against.
pub const NACK_MIN_PACKETS: u64 = 20;

impl<K: Hash + Eq> NackMarks<K> {
    /// Stream `key` has seen `nacks` NACKs and carried `packets` packets in all: the fraction of
    /// the packets since the last report that were NACKed (0..=1), if enough packets passed to
    /// tell. Totals that went backwards (a stream started again) start the count afresh.
    pub fn fraction(&mut self, key: K, nacks: u64, packets: u64) -> Option<f32> {
        let (last_nacks, last_packets) = self.last.insert(key, (nacks, packets))?;
        if nacks < last_nacks || packets < last_packets {
            return None;
        }
        let sent = packets - last_packets;
        if sent < NACK_MIN_PACKETS {
            return None;
        }
        Some(((nacks - last_nacks) as f32 / sent as f32).clamp(0.0, 1.0))
    }
}

/// The score (1..=5) of a window; what was not measured counts as perfect.
pub fn score(window: &LinkWindow) -> f32 {
    let rtt_ms = window.rtt.unwrap_or_default().as_secs_f32() * 1000.0;
    let jitter_ms = window.jitter.unwrap_or_default().as_secs_f32() * 1000.0;
    let loss_percent = window.loss.unwrap_or(0.0) * 100.0;
    // One-way delay plus the jitter buffer it forces, plus a fixed codec delay.
    let latency = rtt_ms / 2.0 + 2.0 * jitter_ms + 10.0;
    let delay_cost = if latency < 160.0 {
        latency / 40.0
    } else {
        (latency - 120.0) / 10.0
    };
    let r = (93.2 - delay_cost - 2.5 * loss_percent).clamp(0.0, 100.0);
    let mos = 1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r);
    mos.clamp(1.0, 5.0)
}

/// The rating of a participant at the end of a window: `silent_for` is how long nothing at all
/// arrived from it (on either connection). Answers the quality and its score.
pub fn rate(window: &LinkWindow, silent_for: Duration) -> (proto::ConnectionQuality, f32) {
    if silent_for >= LOST_AFTER {
        return (proto::ConnectionQuality::Lost, 0.0);
    }
    let score = score(window);
    let quality = if score >= EXCELLENT {
        proto::ConnectionQuality::Excellent
    } else if score >= GOOD {
        proto::ConnectionQuality::Good
    } else {
        proto::ConnectionQuality::Poor
    };
    (quality, score)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ConnectionQuality as Q;

    fn window(loss: f32, jitter_ms: u64, rtt_ms: u64) -> LinkWindow {
        let mut w = LinkWindow::default();
        w.loss(loss);
        w.jitter(Duration::from_millis(jitter_ms));
        w.rtt(Duration::from_millis(rtt_ms));
        w
    }

    fn quality(w: &LinkWindow) -> Q {
        rate(w, Duration::ZERO).0
    }

    #[test]
    fn a_clean_link_is_excellent() {
        assert_eq!(quality(&window(0.0, 2, 1)), Q::Excellent);
        assert_eq!(quality(&window(0.01, 10, 60)), Q::Excellent);
        // Nothing measured yet (no reports): no evidence of trouble.
        assert_eq!(quality(&LinkWindow::default()), Q::Excellent);
    }

    #[test]
    fn loss_brings_it_down() {
        assert_eq!(quality(&window(0.05, 2, 1)), Q::Good, "5% loss");
        assert_eq!(quality(&window(0.15, 2, 1)), Q::Poor, "15% loss");
        assert!(score(&window(0.05, 2, 1)) < score(&window(0.01, 2, 1)));
    }

    #[test]
    fn delay_and_jitter_bring_it_down() {
        assert_eq!(quality(&window(0.0, 2, 500)), Q::Good, "500 ms round trip");
        assert_eq!(quality(&window(0.0, 2, 900)), Q::Poor, "900 ms round trip");
        assert_eq!(quality(&window(0.0, 250, 20)), Q::Poor, "250 ms jitter");
    }

    #[test]
    fn the_score_stays_in_range() {
        let s = score(&window(1.0, 10_000, 10_000));
        assert_eq!(s, 1.0);
        let s = score(&window(0.0, 0, 0));
        assert!(s > 4.3 && s <= 5.0, "{s}");
    }

    #[test]
    fn silence_is_lost() {
        let (q, s) = rate(&window(0.0, 1, 1), LOST_AFTER);
        assert_eq!((q, s), (Q::Lost, 0.0));
        assert_eq!(rate(&window(0.0, 1, 1), LOST_AFTER / 2).0, Q::Excellent);
    }

    #[test]
    fn nacks_count_against_the_packets_since_the_last_report() {
        let mut marks = NackMarks::default();
        // The first report only sets the marks.
        assert_eq!(marks.fraction("a", 5, 1_000), None);
        // 10 NACKs over the next 200 packets: 5%.
        assert_eq!(marks.fraction("a", 15, 1_200), Some(0.05));
        // A clean second.
        assert_eq!(marks.fraction("a", 15, 1_400), Some(0.0));
        // Streams are counted apart.
        assert_eq!(marks.fraction("b", 0, 0), None);
        assert_eq!(marks.fraction("b", 30, 100), Some(0.3));
        // Too few packets to tell (an idle stream), then totals that went backwards.
        assert_eq!(marks.fraction("a", 16, 1_405), None);
        assert_eq!(marks.fraction("a", 0, 10), None);
        assert_eq!(marks.fraction("a", 2, 110), Some(0.02));
        // More NACKs than packets (each names several): capped.
        assert_eq!(marks.fraction("a", 500, 140), Some(1.0));
    }

    #[test]
    fn a_window_keeps_the_worst() {
        let mut w = LinkWindow::default();
        assert!(w.is_empty());
        w.loss(0.02);
        w.loss(0.10);
        w.loss(0.01);
        w.rtt(Duration::from_millis(30));
        w.rtt(Duration::from_millis(10));
        w.loss(7.0); // out of range from a broken report: clamped
        assert_eq!(w.loss, Some(1.0));
        assert_eq!(w.rtt, Some(Duration::from_millis(30)));
        assert!(!w.is_empty());
    }
}
