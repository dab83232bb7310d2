//! Validated identifiers and values, parsed once at the edge (`MeetingId::parse`, `Identity::parse`,
//! `WebhookUrl::parse`, ...).

use std::fmt;

use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use url::Url;

use crate::error::ValidationError;

/// Shortest and longest meeting ids convene hands out (digits).
pub const MEETING_ID_MIN_DIGITS: u8 = 4;
/// Longest meeting id: 18 digits still fit in a signed 64-bit integer, which JSON clients read safely as a number only up to 2^53, so callers that need numbers should keep ids at 15 digits or fewer.
pub const MEETING_ID_MAX_DIGITS: u8 = 18;

/// A numeric meeting id: 4 to 18 decimal digits, the first not zero.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MeetingId(String);

impl MeetingId {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        let len = raw.len();
        if len < MEETING_ID_MIN_DIGITS as usize
            || len > MEETING_ID_MAX_DIGITS as usize
            || !raw.bytes().all(|b| b.is_ascii_digit())
            || raw.starts_with('0')
        {
            return Err(ValidationError::new(
                "meeting_id",
                format!(
                    "must be {MEETING_ID_MIN_DIGITS} to {MEETING_ID_MAX_DIGITS} digits, not starting with 0"
                ),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A fresh id of exactly `digits` digits from a cryptographically secure generator.
    pub fn generate(digits: MeetingIdDigits, rng: &mut impl CryptoRng) -> Self {
        let mut id = String::with_capacity(digits.0 as usize);
        id.push(char::from(b'0' + rng.random_range(1..=9u8)));
        for _ in 1..digits.0 {
            id.push(char::from(b'0' + rng.random_range(0..=9u8)));
        }
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a number (ids have at most 18 digits, so this always fits).
    pub fn as_u64(&self) -> u64 {
        self.0.parse().expect("a MeetingId is 4 to 18 digits")
    }
}

impl TryFrom<String> for MeetingId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<MeetingId> for String {
    fn from(value: MeetingId) -> Self {
        value.0
    }
}
impl fmt::Display for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for MeetingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeetingId({})", self.0)
    }
}

/// How many digits a new meeting id has (`MEETING_ID_DIGITS`, or `n_digits` per request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingIdDigits(u8);

impl MeetingIdDigits {
    pub const DEFAULT: Self = Self(10);

    pub fn new(digits: i64) -> Result<Self, ValidationError> {
        if digits < MEETING_ID_MIN_DIGITS as i64 || digits > MEETING_ID_MAX_DIGITS as i64 {
            return Err(ValidationError::new(
                "n_digits",
                format!("must be between {MEETING_ID_MIN_DIGITS} and {MEETING_ID_MAX_DIGITS}"),
            ));
        }
        Ok(Self(digits as u8))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for MeetingIdDigits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value, in characters (Unicode scalar values, as JSON Schema's
            /// `maxLength` counts them), once trimmed.
            pub const MAX_LEN: usize = $max;

            pub fn parse(raw: &str) -> Result<Self, ValidationError> {
                let value = raw.trim();
                if value.is_empty() {
                    return Err(ValidationError::new($field, "must not be empty"));
                }
                if value.chars().count() > Self::MAX_LEN {
                    return Err(ValidationError::new(
                        $field,
                        format!("must be at most {} characters", Self::MAX_LEN),
                    ));
                }
                if value.chars().any(char::is_control) {
                    return Err(ValidationError::new($field, "must not contain control characters"));
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.0)
            }
        }
    };
}

text_newtype!(
    /// A participant's identity in a meeting: the person, across tokens, reconnects and runs.
    Identity, "identity", 128
);
text_newtype!(
    /// A human-readable name (meeting or person).
    DisplayName, "name", 200
);
text_newtype!(
    /// The media room name of a meeting (LiveKit's `room`); by default the meeting id.
    RoomName, "room_name", 128
);
text_newtype!(
    /// A chat message body.
    ChatText, "text", 4096
);

impl Identity {
    /// A fresh guest identity (`guest-` and 12 random lowercase letters and digits).
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
        let suffix: String = (0..12)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        Self(format!("guest-{suffix}"))
    }
}

impl RoomName {
    pub fn for_meeting(id: &MeetingId) -> Self {
        Self(id.as_str().to_owned())
    }
}

/// The id of one run of a meeting. Tokens and join links name it, so they die with the run.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let bytes: [u8; 12] = rng.random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("run_{hex}"))
    }

    /// Rebuilds a stored id; the store is trusted.
    pub fn from_stored(value: String) -> Self {
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.0)
    }
}

/// The id of one recording of a meeting (`rec_` and 24 hex digits). Generated by the core; a
/// path parameter is parsed, so only well-formed ids reach the store or a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordingId(String);

impl RecordingId {
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let bytes: [u8; 12] = rng.random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("rec_{hex}"))
    }

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let hex = value.strip_prefix("rec_").unwrap_or_default();
        if hex.len() == 24
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(ValidationError::new(
                "recording_id",
                "must be rec_ followed by 24 lowercase hex digits",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for RecordingId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<RecordingId> for String {
    fn from(value: RecordingId) -> Self {
        value.0
    }
}
impl fmt::Display for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordingId({})", self.0)
    }
}

/// A meeting credential (PIN or password). Shown to admins; compared in constant time; never in `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Credential(String);

impl Credential {
    pub const MAX_LEN: usize = 128;
    pub const GENERATED_DIGITS: usize = 8;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        if raw.is_empty() {
            return Err(ValidationError::new("credential", "must not be empty"));
        }
        if raw.chars().count() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "credential",
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "credential",
                "must not contain control characters",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// An 8-digit PIN from a cryptographically secure generator.
    pub fn generate_pin(rng: &mut impl CryptoRng) -> Self {
        Self(
            (0..Self::GENERATED_DIGITS)
                .map(|_| char::from(b'0' + rng.random_range(0..=9u8)))
                .collect(),
        )
    }

    /// Constant-time comparison (the length of the stored value is not secret-dependent here:
    /// `subtle` compares equal-length slices in constant time and unequal lengths fail fast).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// The secret itself, for showing to admins.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Credential {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Credential> for String {
    fn from(value: Credential) -> Self {
        value.0
    }
}
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}
impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}
impl Eq for Credential {}

/// An absolute http(s) URL of at most 2 KiB, for the field `field`.
pub(crate) fn http_url(field: &str, raw: &str) -> Result<Url, ValidationError> {
    if raw.len() > 2048 {
        return Err(ValidationError::new(field, "must be at most 2048 bytes"));
    }
    let url = Url::parse(raw).map_err(|e| ValidationError::new(field, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ValidationError::new(field, "must be an http or https URL"));
    }
    // Parsing may lengthen it (percent-encoding, a trailing `/`); what is stored must read back.
    if url.as_str().len() > 2048 {
        return Err(ValidationError::new(
            field,
            "must be at most 2048 bytes, once percent-encoded",
        ));
    }
    Ok(url)
}

/// A webhook target: an absolute http(s) URL of at most 2 KiB.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        http_url("webhook_url", raw).map(Self)
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}
impl TryFrom<String> for WebhookUrl {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<WebhookUrl> for String {
    fn from(value: WebhookUrl) -> Self {
        value.0.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn generated_meeting_ids_have_exactly_the_requested_digits() {
        let mut rng = StdRng::seed_from_u64(7);
        for digits in MEETING_ID_MIN_DIGITS..=MEETING_ID_MAX_DIGITS {
            let id = MeetingId::generate(MeetingIdDigits::new(digits.into()).unwrap(), &mut rng);
            assert_eq!(id.as_str().len(), digits as usize);
            assert_eq!(MeetingId::parse(id.as_str()).unwrap(), id);
            assert_eq!(id.as_u64().to_string(), id.as_str());
        }
    }

    #[test]
    fn meeting_ids_reject_garbage() {
        for bad in [
            "",
            "123",
            "0123456",
            "12a456",
            "1234567890123456789",
            "-12345",
        ] {
            assert!(MeetingId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(MeetingIdDigits::new(3).is_err());
        assert!(MeetingIdDigits::new(19).is_err());
    }

    #[test]
    fn text_values_are_bounded_and_clean() {
        assert!(Identity::parse("alice").is_ok());
        assert_eq!(Identity::parse("  bob ").unwrap().as_str(), "bob");
        assert!(Identity::parse("").is_err());
        assert!(Identity::parse("a\nb").is_err());
        assert!(Identity::parse(&"x".repeat(129)).is_err());
        let err = DisplayName::parse(&"y".repeat(201)).unwrap_err();
        assert_eq!(err.field, "name");
    }

    #[test]
    fn credentials_compare_and_never_print() {
        let pin = Credential::generate_pin(&mut StdRng::seed_from_u64(1));
        assert_eq!(pin.reveal().len(), 8);
        assert!(pin.reveal().bytes().all(|b| b.is_ascii_digit()));
        assert!(pin.matches(pin.reveal()));
        assert!(!pin.matches("00000000x"));
        assert_eq!(format!("{pin:?}"), "Credential(<redacted>)");
    }

    #[test]
    fn guest_identities_are_distinct() {
        let mut rng = StdRng::seed_from_u64(3);
        let a = Identity::generate(&mut rng);
        let b = Identity::generate(&mut rng);
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("guest-"));
    }
}
