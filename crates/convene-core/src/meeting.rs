//! Meetings: settings, credentials, lifecycle (created -> live -> ended, restartable) and runs.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::ValidationError;
use crate::ids::{
    Credential, DisplayName, InstanceId, MeetingId, RecordingId, RoomName, WebhookUrl, http_url,
};
use crate::participant::Role;
use crate::time::Timestamp;

/// `meeting` (everyone may publish) or `stream` (a stage of speakers in front of viewers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Meeting,
    Stream,
}

/// Who gets in, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingPolicy {
    /// No waiting room: everyone is admitted at once, and anyone's join starts the meeting.
    Open,
    /// Guests wait until a host starts the meeting, then all are admitted; later guests get in at once.
    WaitForHost,
    /// Every guest waits until a host admits them (one by one or all at once).
    AskHost,
    /// The meeting takes no new guests; only hosts and people already admitted get in.
    Deny,
}

/// Video quality preset; the numbers are mesibo's `resolution` values (seed 004).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityPreset {
    #[default]
    Default,
    Qvga,
    Vga,
    Hd,
    Fhd,
    Uhd,
}

impl QualityPreset {
    pub const ALL: [QualityPreset; 6] = [
        Self::Default,
        Self::Qvga,
        Self::Vga,
        Self::Hd,
        Self::Fhd,
        Self::Uhd,
    ];

    /// mesibo's numeric resolution (0 = default ... 5 = UHD).
    pub fn resolution_index(self) -> u8 {
        Self::ALL.iter().position(|p| *p == self).expect("listed") as u8
    }

    pub fn from_resolution_index(index: i64) -> Result<Self, ValidationError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .ok_or_else(|| ValidationError::new("resolution", "must be 0 (default) to 5 (uhd)"))
    }

    /// The largest video size publishers should send, `(width, height)`; `None` = client default.
    pub fn max_video_size(self) -> Option<(u32, u32)> {
        match self {
            Self::Default => None,
            Self::Qvga => Some((320, 240)),
            Self::Vga => Some((640, 480)),
            Self::Hd => Some((1280, 720)),
            Self::Fhd => Some((1920, 1080)),
            Self::Uhd => Some((3840, 2160)),
        }
    }
}

/// Where a meeting is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingStatus {
    Created,
    Live,
    Ended,
}

/// One run of a meeting: from its opening to its end. Tokens and join links name the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub instance_id: InstanceId,
    /// 1 for the first run, then 2, 3, ...
    pub number: u32,
    /// When the run was opened (meeting creation, or restart). BigBlueButton's `createTime`.
    pub opened_at: Timestamp,
    pub live_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
}

/// The three meeting credentials; each decides the role of whoever enters with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub host: Credential,
    pub participant: Credential,
    pub viewer: Credential,
}

impl Credentials {
    /// Fills what is not given with fresh 8-digit PINs; rejects two roles sharing one given
    /// credential (a generated PIN that happens to collide is drawn again).
    pub fn new(
        host: Option<Credential>,
        participant: Option<Credential>,
        viewer: Option<Credential>,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, ValidationError> {
        let given = [host.is_some(), participant.is_some(), viewer.is_some()];
        let mut credentials = Self {
            host: host.unwrap_or_else(|| Credential::generate_pin(rng)),
            participant: participant.unwrap_or_else(|| Credential::generate_pin(rng)),
            viewer: viewer.unwrap_or_else(|| Credential::generate_pin(rng)),
        };
        loop {
            let clash_hp = credentials.host == credentials.participant;
            let clash_hv = credentials.host == credentials.viewer;
            let clash_pv = credentials.participant == credentials.viewer;
            if !(clash_hp || clash_hv || clash_pv) {
                return Ok(credentials);
            }
            if (clash_hp && given[0] && given[1])
                || (clash_hv && given[0] && given[2])
                || (clash_pv && given[1] && given[2])
            {
                return Err(ValidationError::new(
                    "credentials",
                    "host, participant and viewer credentials must differ",
                ));
            }
            if (clash_hp || clash_pv) && !given[1] {
                credentials.participant = Credential::generate_pin(rng);
            } else if !given[2] {
                credentials.viewer = Credential::generate_pin(rng);
            } else {
                credentials.host = Credential::generate_pin(rng);
            }
        }
    }

    /// Validates given credentials without generating (for updates).
    pub fn check_distinct(&self) -> Result<(), ValidationError> {
        if self.host == self.participant
            || self.host == self.viewer
            || self.participant == self.viewer
        {
            return Err(ValidationError::new(
                "credentials",
                "host, participant and viewer credentials must differ",
            ));
        }
        Ok(())
    }

    /// The role a credential grants, compared in constant time against all three.
    pub fn role_for(&self, candidate: &str) -> Option<Role> {
        let host = self.host.matches(candidate);
        let participant = self.participant.matches(candidate);
        let viewer = self.viewer.matches(candidate);
        if host {
            Some(Role::Host)
        } else if participant {
            Some(Role::Speaker)
        } else if viewer {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// An optional planned time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub starts_at: Timestamp,
    pub ends_at: Option<Timestamp>,
}

impl Schedule {
    pub fn new(starts_at: Timestamp, ends_at: Option<Timestamp>) -> Result<Self, ValidationError> {
        if ends_at.is_some_and(|end| end <= starts_at) {
            return Err(ValidationError::new(
                "schedule.ends_at",
                "must be after starts_at",
            ));
        }
        Ok(Self { starts_at, ends_at })
    }
}

/// Free metadata: a JSON object of at most 16 KiB.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct Metadata(serde_json::Map<String, serde_json::Value>);

impl Metadata {
    pub const MAX_BYTES: usize = 16 * 1024;

    pub fn parse(value: serde_json::Value) -> Result<Self, ValidationError> {
        match value {
            serde_json::Value::Object(map) => {
                let size = serde_json::to_vec(&map)
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                if size > Self::MAX_BYTES {
                    return Err(ValidationError::new(
                        "metadata",
                        format!("must be at most {} bytes of JSON", Self::MAX_BYTES),
                    ));
                }
                Ok(Self(map))
            }
            serde_json::Value::Null => Ok(Self::default()),
            _ => Err(ValidationError::new("metadata", "must be a JSON object")),
        }
    }

    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}
impl TryFrom<serde_json::Value> for Metadata {
    type Error = ValidationError;
    fn try_from(value: serde_json::Value) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}
impl From<Metadata> for serde_json::Value {
    fn from(value: Metadata) -> Self {
        serde_json::Value::Object(value.0)
    }
}

/// A logout URL: absolute http(s) only, at most 2 KiB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogoutUrl(Url);

impl LogoutUrl {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        http_url("logout_url", raw).map(Self)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}
impl TryFrom<String> for LogoutUrl {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<LogoutUrl> for String {
    fn from(value: LogoutUrl) -> Self {
        value.0.into()
    }
}

/// The settings an admin chooses; everything but the id, run and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingSettings {
    pub name: DisplayName,
    pub mode: Mode,
    pub policy: WaitingPolicy,
    /// Most people joined at once (hosts are never turned away); `None` = unlimited.
    pub capacity: Option<u32>,
    pub quality: QualityPreset,
    pub logout_url: Option<LogoutUrl>,
    pub metadata: Metadata,
    pub schedule: Option<Schedule>,
    /// Where this meeting's events are POSTed, besides the deployment-wide webhook URLs.
    #[serde(default)]
    pub webhook_url: Option<WebhookUrl>,
    /// People in the waiting room may chat with the hosts (and only with them).
    #[serde(default)]
    pub waiting_room_chat: bool,
    /// Start recording whenever the meeting goes live.
    #[serde(default)]
    pub auto_record: bool,
}

impl MeetingSettings {
    /// A plain meeting with this name and policy: no capacity limit, default quality, no logout
    /// URL, metadata or schedule. Callers change what they need.
    pub fn new(name: DisplayName, mode: Mode, policy: WaitingPolicy) -> Self {
        Self {
            name,
            mode,
            policy,
            capacity: None,
            quality: QualityPreset::Default,
            logout_url: None,
            metadata: Metadata::default(),
            schedule: None,
            webhook_url: None,
            waiting_room_chat: false,
            auto_record: false,
        }
    }
}

/// A meeting as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meeting {
    pub id: MeetingId,
    pub room_name: RoomName,
    pub settings: MeetingSettings,
    pub credentials: Credentials,
    pub status: MeetingStatus,
    pub run: Run,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The sequence number of the meeting's last event; also its optimistic-concurrency version.
    pub last_seq: u64,
    /// The recording running now, if any (at most one at a time).
    #[serde(default)]
    pub recording: Option<ActiveRecording>,
}

/// A recording that has started and not stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRecording {
    pub id: RecordingId,
    pub started_at: Timestamp,
}

impl Meeting {
    pub fn is_live(&self) -> bool {
        self.status == MeetingStatus::Live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn credentials_decide_roles() {
        let mut rng = StdRng::seed_from_u64(9);
        let c = Credentials::new(
            Some(Credential::parse("host-pass").unwrap()),
            None,
            None,
            &mut rng,
        )
        .unwrap();
        assert_eq!(c.role_for("host-pass"), Some(Role::Host));
        assert_eq!(c.role_for(c.participant.reveal()), Some(Role::Speaker));
        assert_eq!(c.role_for(c.viewer.reveal()), Some(Role::Viewer));
        assert_eq!(c.role_for("nope"), None);
        assert_eq!(c.role_for(""), None);
    }

    #[test]
    fn given_credentials_are_kept_or_refused_never_replaced() {
        let mut rng = StdRng::seed_from_u64(9);
        let same = || Some(Credential::parse("same").unwrap());
        assert!(Credentials::new(same(), same(), None, &mut rng).is_err());
        assert!(Credentials::new(None, same(), same(), &mut rng).is_err());
        let c = Credentials::new(same(), None, None, &mut rng).unwrap();
        assert_eq!(c.host.reveal(), "same");
        assert!(c.check_distinct().is_ok());
    }

    #[test]
    fn quality_presets_follow_mesibo_numbers() {
        assert_eq!(QualityPreset::Default.resolution_index(), 0);
        assert_eq!(QualityPreset::Uhd.resolution_index(), 5);
        assert_eq!(
            QualityPreset::from_resolution_index(3).unwrap(),
            QualityPreset::Hd
        );
        assert!(QualityPreset::from_resolution_index(6).is_err());
        assert!(QualityPreset::from_resolution_index(-1).is_err());
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        assert!(Metadata::parse(serde_json::json!({"a": 1})).is_ok());
        assert!(Metadata::parse(serde_json::json!([1])).is_err());
        let big = "x".repeat(Metadata::MAX_BYTES);
        assert!(Metadata::parse(serde_json::json!({ "a": big })).is_err());
    }

    #[test]
    fn logout_urls_are_http() {
        assert!(LogoutUrl::parse("https://lms.example/dashboard").is_ok());
        assert!(LogoutUrl::parse("javascript:alert(1)").is_err());
        assert!(LogoutUrl::parse("not a url").is_err());
    }

    #[test]
    fn a_url_that_parsing_lengthens_past_the_limit_is_refused_not_stored_unreadable() {
        // 2,000 bytes as sent, about 2,200 once its quotes are percent-encoded: taken before,
        // it was stored and then failed to read back, so its meeting answered 500 for good.
        let raw = format!("http://a/{}", "x\"".repeat(995));
        assert!(raw.len() <= 2048);
        assert!(LogoutUrl::parse(&raw).is_err());
        let fits = format!("http://a/{}", "x".repeat(2039));
        let url = LogoutUrl::parse(&fits).unwrap();
        assert_eq!(LogoutUrl::try_from(String::from(url.clone())), Ok(url));
    }

    #[test]
    fn schedules_end_after_they_start() {
        assert!(
            Schedule::new(Timestamp::from_millis(10), Some(Timestamp::from_millis(5))).is_err()
        );
        assert!(Schedule::new(Timestamp::from_millis(10), None).is_ok());
    }
}
