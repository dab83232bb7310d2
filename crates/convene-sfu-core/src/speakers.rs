//! Active speakers, pure: a [`LevelMeter`] per published audio track reads the RFC 6464 audio
//! level each packet carries and, once per observation window, says whether the track was
//! speaking and how loud (smoothed); a [`SpeakerSet`] per room turns the room's speakers at each
//! window into the `SpeakerInfo` changes the clients are sent (`SpeakersChanged`). Time comes in
//! as the window's length; nothing here reads a clock.

use std::time::Duration;

use livekit_protocol as proto;

/// A packet at least this loud (in -dBov: 0 is the loudest, 127 silence) counts as voice.
pub const VOICE_DBOV: u8 = 40;
/// The packet interval clients use for audio (Opus at 20 ms); a window expects this many.
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// A window is speaking when at least this share (percent) of its expected packets were voice,
/// so a cough or a click does not make a speaker.
const MIN_VOICE_PERCENT: u64 = 30;
/// A speaker stays one for this many quiet windows (a pause between words does not end it).
const HANG_WINDOWS: u8 = 2;
/// The weight of a new window's level in the smoothed level (rising), and falling.
const RISE: f32 = 0.6;
const FALL: f32 = 0.3;
/// Levels are reported in steps of this size: a change smaller than a step is not news.
const LEVEL_STEP: f32 = 0.05;

/// The speaking state of one audio track, fed each packet's level and read once per window.
#[derive(Debug, Clone, Default)]
pub struct LevelMeter {
    voice_packets: u32,
    /// The sum of the voice packets' -dBov (averaged, then made linear, once per window).
    voice_dbov_sum: u32,
    smoothed: f32,
    quiet_windows: u8,
    speaking: bool,
}

/// `dbov` (0 loudest .. 127) as a linear level in 0..=1.
pub fn linear(dbov: f32) -> f32 {
    10f32.powf(-dbov / 20.0)
}

impl LevelMeter {
    /// One packet's audio level, in -dBov as RFC 6464 carries it (0 loudest, 127 silence). Per
    /// packet: a comparison and two additions.
    #[inline]
    pub fn observe(&mut self, dbov: u8) {
        if dbov <= VOICE_DBOV {
            self.voice_packets += 1;
            self.voice_dbov_sum += u32::from(dbov);
        }
    }

    /// The window of length `window` ended: `Some(level)` (0..=1, smoothed) while the track is
    /// a speaker, `None` while it is not. Starts a new window.
    pub fn tick(&mut self, window: Duration) -> Option<f32> {
        let expected = (window.as_millis() / PACKET_INTERVAL.as_millis()).max(1) as u64;
        let voice = u64::from(self.voice_packets) * 100 >= expected * MIN_VOICE_PERCENT;
        let level = if voice {
            linear(self.voice_dbov_sum as f32 / self.voice_packets as f32)
        } else {
            0.0
        };
        self.voice_packets = 0;
        self.voice_dbov_sum = 0;
        if voice {
            self.quiet_windows = 0;
            self.smoothed = if self.speaking {
                self.smoothed + (level - self.smoothed) * RISE
            } else {
                level
            };
            self.speaking = true;
        } else if self.speaking {
            self.quiet_windows += 1;
            self.smoothed -= self.smoothed * FALL;
            if self.quiet_windows > HANG_WINDOWS {
                self.speaking = false;
                self.smoothed = 0.0;
            }
        }
        self.speaking.then_some(self.smoothed)
    }
}

/// A level rounded to the reported step, never 0 for a speaker (clients treat 0 as silent).
fn quantize(level: f32) -> f32 {
    ((level / LEVEL_STEP).round() * LEVEL_STEP).clamp(LEVEL_STEP, 1.0)
}

/// The speakers a room's clients were last told of, loudest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeakerSet {
    current: Vec<(String, f32)>,
}

impl SpeakerSet {
    /// The speakers now: (participant sid, level) pairs in any order, at most one per sid.
    /// Answers the `SpeakerInfo`s to send when the clients' view changed (someone started or
    /// stopped, or a level moved by a step): every current speaker (active, loudest first), then
    /// those who stopped (inactive, level 0). `None` when nothing changed.
    pub fn update(&mut self, mut now: Vec<(String, f32)>) -> Option<Vec<proto::SpeakerInfo>> {
        for (_, level) in &mut now {
            *level = quantize(*level);
        }
        now.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if now == self.current {
            return None;
        }
        let stopped = self
            .current
            .iter()
            .filter(|(sid, _)| !now.iter().any(|(s, _)| s == sid))
            .map(|(sid, _)| proto::SpeakerInfo {
                sid: sid.clone(),
                level: 0.0,
                active: false,
            });
        let mut infos: Vec<proto::SpeakerInfo> = now
            .iter()
            .map(|(sid, level)| proto::SpeakerInfo {
                sid: sid.clone(),
                level: *level,
                active: true,
            })
            .collect();
        infos.extend(stopped);
        self.current = now;
        Some(infos)
    }

    /// The current speakers as `SpeakerInfo`s (for a participant who was not told yet).
    pub fn snapshot(&self) -> Vec<proto::SpeakerInfo> {
        self.current
            .iter()
            .map(|(sid, level)| proto::SpeakerInfo {
                sid: sid.clone(),
                level: *level,
                active: true,
            })
            .collect()
    }

    /// Forget `sid` (it left): it is not reported as a stopped speaker later.
    pub fn forget(&mut self, sid: &str) {
        self.current.retain(|(s, _)| s != sid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(400);

    /// A window of 20 packets (400 ms at 20 ms), `voice` of them at `dbov`, the rest silent.
    fn window(meter: &mut LevelMeter, voice: usize, dbov: u8) -> Option<f32> {
        for i in 0..20 {
            meter.observe(if i < voice { dbov } else { 127 });
        }
        meter.tick(WINDOW)
    }

    #[test]
    fn silence_is_no_speaker() {
        let mut meter = LevelMeter::default();
        for _ in 0..5 {
            assert_eq!(window(&mut meter, 0, 127), None);
        }
        // Quiet but audible noise below the voice threshold is not speech either.
        assert_eq!(window(&mut meter, 20, VOICE_DBOV + 10), None);
    }

    #[test]
    fn a_loud_track_speaks_at_once_with_its_level() {
        let mut meter = LevelMeter::default();
        let level = window(&mut meter, 20, 20).expect("speaking");
        assert!((level - linear(20.0)).abs() < 1e-4, "{level}");
        assert!((0.09..0.11).contains(&level), "-20 dBov is 0.1: {level}");
        // Louder is a higher level.
        let mut loud = LevelMeter::default();
        assert!(window(&mut loud, 20, 6).unwrap() > level);
    }

    #[test]
    fn a_click_is_not_speech() {
        let mut meter = LevelMeter::default();
        assert_eq!(window(&mut meter, 3, 10), None, "3 of 20 packets");
        assert!(window(&mut meter, 6, 10).is_some(), "6 of 20 packets (30%)");
    }

    #[test]
    fn a_pause_keeps_the_speaker_then_silence_ends_it() {
        let mut meter = LevelMeter::default();
        let start = window(&mut meter, 20, 20).unwrap();
        // Two quiet windows: still speaking, the level falling.
        let first = window(&mut meter, 0, 127).unwrap();
        let second = window(&mut meter, 0, 127).unwrap();
        assert!(first < start && second < first, "{start} {first} {second}");
        // The third quiet window ends it.
        assert_eq!(window(&mut meter, 0, 127), None);
        assert_eq!(window(&mut meter, 0, 127), None);
        // Speaking again starts again at its own level.
        let again = window(&mut meter, 20, 20).unwrap();
        assert!((again - start).abs() < 1e-4);
    }

    #[test]
    fn the_level_is_smoothed() {
        let mut meter = LevelMeter::default();
        let quiet = window(&mut meter, 20, 30).unwrap();
        let next = window(&mut meter, 20, 0).unwrap();
        assert!(
            next > quiet && next < 1.0,
            "moves toward 1 without jumping: {next}"
        );
        let after = window(&mut meter, 20, 0).unwrap();
        assert!(after > next);
    }

    #[test]
    fn the_expected_count_follows_the_window_length() {
        // 10 voice packets: 50% of a 400 ms window, 12.5% of a 1.6 s one.
        let mut meter = LevelMeter::default();
        for _ in 0..10 {
            meter.observe(10);
        }
        assert!(meter.tick(WINDOW).is_some());
        let mut meter = LevelMeter::default();
        for _ in 0..10 {
            meter.observe(10);
        }
        assert_eq!(meter.tick(Duration::from_millis(1600)), None);
    }

    fn sids(infos: &[proto::SpeakerInfo]) -> Vec<(&str, bool)> {
        infos.iter().map(|i| (i.sid.as_str(), i.active)).collect()
    }

    #[test]
    fn speakers_are_reported_on_change_only() {
        let mut set = SpeakerSet::default();
        assert_eq!(set.update(vec![]), None, "nobody, as before");
        let infos = set.update(vec![("PA_a".into(), 0.1)]).expect("a started");
        assert_eq!(sids(&infos), [("PA_a", true)]);
        assert!((infos[0].level - 0.1).abs() < 1e-6);
        // The same, or a level within a step: nothing to say.
        assert_eq!(set.update(vec![("PA_a".into(), 0.1)]), None);
        assert_eq!(set.update(vec![("PA_a".into(), 0.11)]), None);
        // A level moved by a step: news.
        assert!(set.update(vec![("PA_a".into(), 0.3)]).is_some());
        // b starts, louder: listed first; a is still listed (the full set, for clients that
        // take each message as the list).
        let infos = set
            .update(vec![("PA_a".into(), 0.3), ("PA_b".into(), 0.9)])
            .unwrap();
        assert_eq!(sids(&infos), [("PA_b", true), ("PA_a", true)]);
        // a stops: reported inactive at level 0.
        let infos = set.update(vec![("PA_b".into(), 0.9)]).unwrap();
        assert_eq!(sids(&infos), [("PA_b", true), ("PA_a", false)]);
        assert_eq!(infos[1].level, 0.0);
        // Everyone stops.
        let infos = set.update(vec![]).unwrap();
        assert_eq!(sids(&infos), [("PA_b", false)]);
        assert_eq!(set.update(vec![]), None);
    }

    #[test]
    fn a_speaker_is_never_reported_at_level_zero() {
        let mut set = SpeakerSet::default();
        let infos = set.update(vec![("PA_a".into(), 0.0001)]).unwrap();
        assert!(infos[0].active && infos[0].level > 0.0);
    }

    #[test]
    fn snapshot_and_forget() {
        let mut set = SpeakerSet::default();
        set.update(vec![("PA_a".into(), 0.5), ("PA_b".into(), 0.2)]);
        assert_eq!(sids(&set.snapshot()), [("PA_a", true), ("PA_b", true)]);
        set.forget("PA_a");
        // a left: not reported as stopped; b stopping is.
        let infos = set.update(vec![]).unwrap();
        assert_eq!(sids(&infos), [("PA_b", false)]);
    }
}
