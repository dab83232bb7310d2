//! Pure rules of adaptive streams: what each subscriber asked to receive of a video track
//! (`UpdateTrackSettings`: disabled, a size or a quality cap), which simulcast layer that is,
//! how a subscriber's estimated bandwidth is shared between its video tracks, and which layers
//! a publisher must keep sending (dynacast). Time is passed in; nothing here does IO.

use std::time::{Duration, Instant};

use livekit_protocol as proto;
use str0m::media::Rid;

/// A simulcast layer's quality, as LiveKit names them (rids `q`, `h`, `f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quality {
    Low,
    Medium,
    High,
}

impl Quality {
    pub const ALL: [Quality; 3] = [Quality::Low, Quality::Medium, Quality::High];

    /// The quality of a layer by its rid, as livekit-client names its encodings; a track without
    /// simulcast (no rid) is its own best layer.
    pub fn of_rid(rid: Option<Rid>) -> Quality {
        match rid.as_deref() {
            Some("q") => Quality::Low,
            Some("h") => Quality::Medium,
            _ => Quality::High,
        }
    }

    /// From the protocol's `VideoQuality`; `OFF` and unknown values are `None`.
    pub fn from_proto(value: i32) -> Option<Quality> {
        match proto::VideoQuality::try_from(value).ok()? {
            proto::VideoQuality::Low => Some(Quality::Low),
            proto::VideoQuality::Medium => Some(Quality::Medium),
            proto::VideoQuality::High => Some(Quality::High),
            proto::VideoQuality::Off => None,
        }
    }

    pub fn to_proto(self) -> proto::VideoQuality {
        match self {
            Quality::Low => proto::VideoQuality::Low,
            Quality::Medium => proto::VideoQuality::Medium,
            Quality::High => proto::VideoQuality::High,
        }
    }

    fn down(self) -> Option<Quality> {
        match self {
            Quality::Low => None,
            Quality::Medium => Some(Quality::Low),
            Quality::High => Some(Quality::Medium),
        }
    }
}

/// What one subscriber asked for one track (`UpdateTrackSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSettings {
    /// Send nothing of the track.
    pub disabled: bool,
    /// The best layer worth sending.
    pub max: Quality,
}

impl Default for TrackSettings {
    fn default() -> Self {
        TrackSettings {
            disabled: false,
            max: Quality::High,
        }
    }
}

impl TrackSettings {
    /// The settings a request asks for, given the track's published `layers`: a size (both
    /// dimensions set) is the lowest layer that covers it; otherwise the quality cap (livekit-client
    /// sends one or the other; an unknown quality, or `OFF`, caps nothing and is not a pause).
    pub fn from_request(
        request: &proto::UpdateTrackSettings,
        layers: &[proto::VideoLayer],
    ) -> Self {
        let max = if request.width > 0 && request.height > 0 {
            quality_for_size(layers, request.width, request.height)
        } else {
            Quality::from_proto(request.quality).unwrap_or(Quality::High)
        };
        TrackSettings {
            disabled: request.disabled,
            max,
        }
    }
}

/// The lowest published layer whose picture covers `width` x `height` (in either orientation: a
/// rotated camera's layers are listed as captured); the best layer when none does, and `High` when
/// the publisher listed no layer sizes.
pub fn quality_for_size(layers: &[proto::VideoLayer], width: u32, height: u32) -> Quality {
    let (want_long, want_short) = (width.max(height), width.min(height));
    let mut sized: Vec<(Quality, u32, u32)> = layers
        .iter()
        .filter(|l| l.width > 0 && l.height > 0)
        .filter_map(|l| {
            let quality = Quality::from_proto(l.quality)?;
            Some((quality, l.width.max(l.height), l.width.min(l.height)))
        })
        .collect();
    sized.sort_by_key(|(quality, ..)| *quality);
    sized
        .iter()
        .find(|(_, long, short)| *long >= want_long && *short >= want_short)
        .or(sized.last())
        .map_or(Quality::High, |(quality, ..)| *quality)
}

/// The layer to forward to a subscriber capped at `cap`, of the layers available (their rids):
/// the best at or under the cap, else the lowest there is.
pub fn choose_layer(
    available: impl Iterator<Item = Option<Rid>> + Clone,
    cap: Quality,
) -> Option<Option<Rid>> {
    let under = available
        .clone()
        .filter(|rid| Quality::of_rid(*rid) <= cap)
        .max_by_key(|rid| Quality::of_rid(*rid));
    under.or_else(|| available.min_by_key(|rid| Quality::of_rid(*rid)))
}

/// The bitrate of each quality of a track in bits per second: from the publisher's announced
/// layers, else a typical figure for a camera at that layer.
pub fn layer_bitrates(layers: &[proto::VideoLayer]) -> [u64; 3] {
    let mut rates = [150_000, 500_000, 1_700_000];
    for layer in layers {
        if let Some(quality) = Quality::from_proto(layer.quality)
            && layer.bitrate > 0
        {
            rates[quality as usize] = layer.bitrate as u64;
        }
    }
    rates
}

/// A step up must fit the estimate with this much to spare, so that an estimate wavering around
/// a layer's bitrate does not switch layers back and forth.
pub const UP_HEADROOM: f64 = 1.25;

/// One video track in a subscriber's allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// The best layer asked for (the subscriber's settings).
    pub max: Quality,
    /// The layer the allocation gave it last time.
    pub current: Quality,
    /// Bits per second of each quality (`layer_bitrates`).
    pub bitrates: [u64; 3],
}

/// Share `estimate` (bits per second) between a subscriber's video tracks after `audio` (bits per
/// second, always sent): each track starts at what it asked for, and while the sum does not fit,
/// the track that costs most steps down a layer (never below the lowest: a thumbnail keeps
/// playing). A layer above the one a track has now counts [`UP_HEADROOM`] times its bitrate.
pub fn allocate(estimate: u64, audio: u64, tracks: &[Wanted]) -> Vec<Quality> {
    let cost = |t: &Wanted, q: Quality| {
        let rate = t.bitrates[q as usize] as f64;
        if q > t.current {
            rate * UP_HEADROOM
        } else {
            rate
        }
    };
    let mut given: Vec<Quality> = tracks.iter().map(|t| t.max).collect();
    let budget = estimate.saturating_sub(audio) as f64;
    loop {
        let total: f64 = tracks.iter().zip(&given).map(|(t, q)| cost(t, *q)).sum();
        if total <= budget {
            break;
        }
        let biggest = tracks
            .iter()
            .zip(&given)
            .enumerate()
            .filter(|(_, (_, q))| q.down().is_some())
            .max_by(|(_, (a, qa)), (_, (b, qb))| cost(a, **qa).total_cmp(&cost(b, **qb)))
            .map(|(i, _)| i);
        let Some(i) = biggest else { break };
        given[i] = given[i].down().expect("filtered");
    }
    given
}

/// Loss at or above this share of what a subscriber was sent (its receiver reports): the link
/// is full now, whatever the bandwidth estimator says yet.
pub const LOSS_FULL: f32 = 0.10;
/// Loss under this share: the link has room again.
pub const LOSS_CLEAR: f32 = 0.02;
/// How much a [`LossCap`] grows in a second of clear reports.
pub const LOSS_CAP_GROWTH: f64 = 1.08;

/// A subscriber's rate as its receiver reports show it, beside the estimator's. A link cut
/// short by a policer or a full queue drops packets before it delays them, and the estimator
/// took 3-4 s to follow such a link down (docs/benchmarks.md, "Media forwarding"), while the
/// picture froze. A report with [`LOSS_FULL`] or more caps the rate at what got through
/// (sent × (1 − loss)); the cap holds while loss stays above [`LOSS_CLEAR`], then grows by
/// [`LOSS_CAP_GROWTH`] a second, and is gone once it reaches the estimate.
#[derive(Debug, Clone, Default)]
pub struct LossCap {
    cap: Option<f64>,
    grown_at: Option<Instant>,
}

impl LossCap {
    /// A report period: the subscriber was sent `sent` bits per second of video, of which the
    /// share `loss` was lost.
    pub fn report(&mut self, sent: u64, loss: f32, now: Instant) {
        if loss >= LOSS_FULL && sent > 0 {
            let through = sent as f64 * f64::from(1.0 - loss.min(1.0));
            self.cap = Some(self.cap.map_or(through, |cap| cap.min(through)));
            self.grown_at = Some(now);
        } else if loss >= LOSS_CLEAR {
            // Still losing: held where it is, not grown.
            self.grown_at = self.cap.map(|_| now);
        }
    }

    /// No cap: the estimate leads.
    #[cfg(test)]
    pub fn is_clear(&self) -> bool {
        self.cap.is_none()
    }

    /// `estimate` (bits per second) under the cap, the cap grown for the clear time since it
    /// was last set or grown; a cap that reached the estimate is dropped.
    pub fn limit(&mut self, estimate: u64, now: Instant) -> u64 {
        let Some(cap) = self.cap else {
            return estimate;
        };
        let since = self
            .grown_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let cap = cap * LOSS_CAP_GROWTH.powf(since.as_secs_f64());
        self.grown_at = Some(now);
        if cap >= estimate as f64 {
            self.cap = None;
            self.grown_at = None;
            return estimate;
        }
        self.cap = Some(cap);
        cap.round() as u64
    }
}

/// How long a publisher keeps sending a layer nobody needs any more before it is told to pause
/// it; a layer someone needs is asked for at once.
pub const DYNACAST_PAUSE_DELAY: Duration = Duration::from_secs(3);

/// Which layers of one simulcast track its publisher was told to send: the best quality any
/// subscriber needs (`None`: nobody needs any) and every layer under it.
#[derive(Debug, Clone)]
pub struct Dynacast {
    sent: Option<Quality>,
    lower_since: Option<Instant>,
}

impl Default for Dynacast {
    /// A publisher starts by sending every layer.
    fn default() -> Self {
        Dynacast {
            sent: Some(Quality::High),
            lower_since: None,
        }
    }
}

impl Dynacast {
    /// The best quality anyone needs is now `wanted`: what to tell the publisher, if anything.
    /// More is told at once; less once it has held for [`DYNACAST_PAUSE_DELAY`].
    pub fn update(&mut self, wanted: Option<Quality>, now: Instant) -> Option<Option<Quality>> {
        if wanted == self.sent {
            self.lower_since = None;
            return None;
        }
        if wanted < self.sent {
            let since = *self.lower_since.get_or_insert(now);
            if now.saturating_duration_since(since) < DYNACAST_PAUSE_DELAY {
                return None;
            }
        }
        self.lower_since = None;
        self.sent = wanted;
        Some(wanted)
    }
}

/// The layers to send when the best needed is `max`, per quality (low to high).
pub fn subscribed_qualities(max: Option<Quality>) -> Vec<proto::SubscribedQuality> {
    Quality::ALL
        .iter()
        .map(|q| proto::SubscribedQuality {
            quality: q.to_proto() as i32,
            enabled: max.is_some_and(|m| *q <= m),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_caps_the_rate_at_what_got_through_until_the_link_clears() {
        let t0 = Instant::now();
        let mut cap = LossCap::default();
        // No reports, or light loss: the estimate as it is.
        assert_eq!(cap.limit(5_000_000, t0), 5_000_000);
        cap.report(2_500_000, 0.05, t0);
        assert_eq!(cap.limit(5_000_000, t0), 5_000_000);
        // A policer drops 85%: 375 kbit/s got through, whatever the estimate still says.
        cap.report(2_500_000, 0.85, t0);
        assert_eq!(cap.limit(5_000_000, t0), 375_000);
        // A lower report lowers it; a higher one under heavy loss does not raise it.
        let t1 = t0 + Duration::from_secs(1);
        cap.report(400_000, 0.5, t1);
        assert_eq!(cap.limit(5_000_000, t1), 200_000);
        cap.report(2_000_000, 0.2, t1);
        assert_eq!(cap.limit(5_000_000, t1), 200_000);
        // Still losing some: held, not grown.
        let t2 = t1 + Duration::from_secs(2);
        cap.report(200_000, 0.05, t2);
        assert_eq!(cap.limit(5_000_000, t2), 200_000);
        // Clear: grows 8% a second.
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(cap.limit(5_000_000, t3), 216_000);
        let t4 = t3 + Duration::from_secs(2);
        assert_eq!(cap.limit(5_000_000, t4), 251_942);
        // Once the estimate itself is lower, the cap is gone: the estimate leads again.
        assert_eq!(cap.limit(240_000, t4), 240_000);
        assert_eq!(cap.limit(5_000_000, t4), 5_000_000);
    }

    #[test]
    fn a_loss_cap_moves_a_subscriber_to_the_layer_that_gets_through() {
        let t0 = Instant::now();
        let rates = layer_bitrates(&[]);
        let track = Wanted {
            max: Quality::High,
            current: Quality::High,
            bitrates: rates,
        };
        let mut cap = LossCap::default();
        assert_eq!(
            allocate(cap.limit(5_000_000, t0), 0, &[track]),
            [Quality::High]
        );
        cap.report(1_700_000, 0.85, t0);
        assert_eq!(
            allocate(cap.limit(5_000_000, t0), 0, &[track]),
            [Quality::Low]
        );
    }

    fn layer(
        quality: proto::VideoQuality,
        width: u32,
        height: u32,
        bitrate: u32,
    ) -> proto::VideoLayer {
        proto::VideoLayer {
            quality: quality as i32,
            width,
            height,
            bitrate,
            ..Default::default()
        }
    }

    fn camera() -> Vec<proto::VideoLayer> {
        vec![
            layer(proto::VideoQuality::High, 1280, 720, 1_700_000),
            layer(proto::VideoQuality::Low, 320, 180, 120_000),
            layer(proto::VideoQuality::Medium, 640, 360, 450_000),
        ]
    }

    fn rid(s: &str) -> Option<Rid> {
        Some(Rid::from(s))
    }

    #[test]
    fn a_size_picks_the_lowest_layer_that_covers_it() {
        let layers = camera();
        assert_eq!(quality_for_size(&layers, 160, 90), Quality::Low);
        assert_eq!(quality_for_size(&layers, 320, 180), Quality::Low);
        assert_eq!(quality_for_size(&layers, 321, 180), Quality::Medium);
        assert_eq!(quality_for_size(&layers, 640, 360), Quality::Medium);
        assert_eq!(quality_for_size(&layers, 1000, 500), Quality::High);
        // Bigger than any layer: the best there is.
        assert_eq!(quality_for_size(&layers, 4000, 3000), Quality::High);
        // A portrait element over a landscape camera compares long side to long side.
        assert_eq!(quality_for_size(&layers, 180, 320), Quality::Low);
        // No sizes announced: nothing to cap by.
        assert_eq!(quality_for_size(&[], 100, 100), Quality::High);
    }

    #[test]
    fn settings_follow_what_livekit_client_sends() {
        let layers = camera();
        let sized = proto::UpdateTrackSettings {
            width: 300,
            height: 170,
            // livekit-client leaves the deprecated quality at its default (LOW) with a size.
            quality: proto::VideoQuality::High as i32,
            ..Default::default()
        };
        assert_eq!(
            TrackSettings::from_request(&sized, &layers).max,
            Quality::Low
        );
        let capped = proto::UpdateTrackSettings {
            quality: proto::VideoQuality::Medium as i32,
            ..Default::default()
        };
        assert_eq!(
            TrackSettings::from_request(&capped, &layers).max,
            Quality::Medium
        );
        let off = proto::UpdateTrackSettings {
            quality: proto::VideoQuality::Off as i32,
            disabled: true,
            ..Default::default()
        };
        let off = TrackSettings::from_request(&off, &layers);
        assert!(off.disabled);
        assert_eq!(off.max, Quality::High);
        let garbage = proto::UpdateTrackSettings {
            quality: 77,
            ..Default::default()
        };
        assert_eq!(
            TrackSettings::from_request(&garbage, &layers),
            TrackSettings::default()
        );
    }

    #[test]
    fn the_layer_is_the_best_under_the_cap_or_the_lowest() {
        let all = [rid("q"), rid("h"), rid("f")];
        assert_eq!(
            choose_layer(all.iter().copied(), Quality::High),
            Some(rid("f"))
        );
        assert_eq!(
            choose_layer(all.iter().copied(), Quality::Medium),
            Some(rid("h"))
        );
        assert_eq!(
            choose_layer(all.iter().copied(), Quality::Low),
            Some(rid("q"))
        );
        // The publisher paused the low layer: a low cap gets the lowest there is.
        let upper = [rid("h"), rid("f")];
        assert_eq!(
            choose_layer(upper.iter().copied(), Quality::Low),
            Some(rid("h"))
        );
        // No simulcast: the one layer, whatever the cap.
        assert_eq!(choose_layer([None].into_iter(), Quality::Low), Some(None));
        assert_eq!(choose_layer([].into_iter(), Quality::Low), None);
    }

    fn wanted(max: Quality, current: Quality) -> Wanted {
        Wanted {
            max,
            current,
            bitrates: layer_bitrates(&camera()),
        }
    }

    #[test]
    fn the_allocation_steps_the_costliest_track_down_first() {
        use Quality::*;
        let tracks = [wanted(High, High), wanted(High, High)];
        assert_eq!(allocate(10_000_000, 64_000, &tracks), vec![High, High]);
        // Room for one high and one medium (of equal tracks, the later one steps down).
        assert_eq!(allocate(2_300_000, 64_000, &tracks), vec![High, Medium]);
        assert_eq!(allocate(1_000_000, 64_000, &tracks), vec![Medium, Medium]);
        // Never below the lowest layer.
        assert_eq!(allocate(10_000, 64_000, &tracks), vec![Low, Low]);
        // What was asked for is the ceiling.
        assert_eq!(allocate(10_000_000, 0, &[wanted(Low, Low)]), vec![Low]);
        assert_eq!(allocate(0, 0, &[]), Vec::<Quality>::new());
    }

    #[test]
    fn a_step_up_needs_headroom_so_the_layer_does_not_flap() {
        use Quality::*;
        // An estimate just over the high layer keeps a track that is there...
        assert_eq!(allocate(1_800_000, 0, &[wanted(High, High)]), vec![High]);
        // ...but does not bring one up from medium: that needs a quarter more.
        assert_eq!(
            allocate(1_800_000, 0, &[wanted(High, Medium)]),
            vec![Medium]
        );
        assert_eq!(allocate(2_200_000, 0, &[wanted(High, Medium)]), vec![High]);
    }

    #[test]
    fn announced_bitrates_replace_the_typical_ones() {
        assert_eq!(layer_bitrates(&camera()), [120_000, 450_000, 1_700_000]);
        assert_eq!(layer_bitrates(&[]), [150_000, 500_000, 1_700_000]);
    }

    #[test]
    fn dynacast_asks_for_more_at_once_and_pauses_after_a_delay() {
        let t0 = Instant::now();
        let mut d = Dynacast::default();
        // A publisher starts with every layer: nothing to say while someone wants them all.
        assert_eq!(d.update(Some(Quality::High), t0), None);
        // Everyone went to low: told only once it held for the delay.
        assert_eq!(d.update(Some(Quality::Low), t0), None);
        assert_eq!(
            d.update(Some(Quality::Low), t0 + Duration::from_secs(2)),
            None
        );
        assert_eq!(
            d.update(Some(Quality::Low), t0 + DYNACAST_PAUSE_DELAY),
            Some(Some(Quality::Low))
        );
        // A dip shorter than the delay is never sent.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(d.update(None, t1), None);
        assert_eq!(
            d.update(Some(Quality::Low), t1 + Duration::from_secs(1)),
            None
        );
        // Nobody at all, held for the delay: every layer paused.
        assert_eq!(d.update(None, t1 + Duration::from_secs(2)), None);
        assert_eq!(d.update(None, t1 + Duration::from_secs(4)), None);
        assert_eq!(d.update(None, t1 + Duration::from_secs(5)), Some(None));
        // Someone wants the top again: at once.
        assert_eq!(
            d.update(Some(Quality::High), t1 + Duration::from_secs(5)),
            Some(Some(Quality::High))
        );
    }

    #[test]
    fn subscribed_qualities_enable_every_layer_up_to_the_best_needed() {
        let enabled = |max| -> Vec<bool> {
            subscribed_qualities(max)
                .iter()
                .map(|q| q.enabled)
                .collect()
        };
        assert_eq!(enabled(Some(Quality::High)), [true, true, true]);
        assert_eq!(enabled(Some(Quality::Low)), [true, false, false]);
        assert_eq!(enabled(None), [false, false, false]);
        assert_eq!(
            subscribed_qualities(None)[2].quality,
            proto::VideoQuality::High as i32
        );
    }
}
