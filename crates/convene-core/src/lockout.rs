//! Guessing limits for credentials, PINs and passcodes: pure rules over failure counters kept in
//! the store (so they hold across restarts and nodes).
//!
//! - Per meeting: after [`GuessLimits::per_meeting`] consecutive failures (default
//!   [`MEETING_LOCK_THRESHOLD`]), checks are locked with a delay that doubles with each further
//!   failure, up to [`MAX_LOCK`] (NIST SP 800-63B 5.2.2). A success resets the count.
//!   A meeting's host credential has a counter of its own (see
//!   [`crate::service::Meetings::check_credential`]).
//! - Per client address: at most [`GuessLimits::per_address`] failures in
//!   [`GuessLimits::address_window`] (default [`ADDRESS_LIMIT`] in [`ADDRESS_WINDOW`]).
//!
//! The thresholds are a deployment's settings (`CONVENE_RATE_LIMIT_GUESSES_*`); a crowd entering
//! with the right credential never meets them, only wrong guesses count.
//!
//! Every surface that takes a secret without the API key counts here: the native `enter`
//! (meeting id + credential), seed 003's meeting passwords and seed 004's pins (per meeting, host
//! credential apart), seed 001's passcode and seed 003's token (one counter each), and seed 000's
//! anonymous routes, where the meeting id (and on `/user/join` the guest identity) is the only
//! secret, so an unknown one is an address failure ([`crate::service::Meetings::check_id_lookup`]).
//! Names that are not secrets are not counted: seed 001's stream names and seed 002's room names
//! (their callers hold the passcode or a signed-in session, and may create any name), and
//! meeting ids behind seed 003's token (the app's own backend).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, ErrorCode};
use crate::time::Timestamp;

pub const MEETING_LOCK_THRESHOLD: u32 = 100;
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
pub const ADDRESS_LIMIT: u32 = 30;
pub const ADDRESS_WINDOW: Duration = Duration::from_secs(10 * 60);
/// A meeting's failure count is forgotten this long after its last failure (housekeeping), so
/// the table of counters does not grow with every meeting id ever guessed.
pub const MEETING_FORGET: Duration = Duration::from_secs(30 * 24 * 3600);

/// The guessing limits' thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuessLimits {
    /// Consecutive failures of one meeting's checks before they lock (then the doubling delay).
    pub per_meeting: u32,
    /// Failures from one client address within `address_window` before it is refused.
    pub per_address: u32,
    pub address_window: Duration,
}

impl Default for GuessLimits {
    fn default() -> Self {
        Self {
            per_meeting: MEETING_LOCK_THRESHOLD,
            per_address: ADDRESS_LIMIT,
            address_window: ADDRESS_WINDOW,
        }
    }
}

/// What a failure counter is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureScope {
    /// Credential checks of one meeting (subject = meeting id, or a surface-prefixed key).
    Meeting,
    /// Everything one client address tries (subject = IP address).
    Address,
}

impl FailureScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Meeting => "meeting",
            Self::Address => "address",
        }
    }

    /// Counters whose last failure is before this are dropped by housekeeping: for an address
    /// such a counter is already void (its window passed); for a meeting, [`MEETING_FORGET`].
    pub fn stale_before(self, now: Timestamp, limits: &GuessLimits) -> Timestamp {
        now.minus(self.window(limits).unwrap_or(MEETING_FORGET))
    }

    /// Failures older than this are forgotten when the next one is counted (`None` = consecutive until a success).
    pub fn window(self, limits: &GuessLimits) -> Option<Duration> {
        match self {
            Self::Meeting => None,
            Self::Address => Some(limits.address_window),
        }
    }
}

/// A failure counter as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub failures: u32,
    pub last_failure_at: Option<Timestamp>,
}

impl FailureRecord {
    /// When checks open again, if they are locked.
    pub fn locked_until(&self, scope: FailureScope, limits: &GuessLimits) -> Option<Timestamp> {
        let last = self.last_failure_at?;
        match scope {
            FailureScope::Meeting => {
                if self.failures < limits.per_meeting {
                    return None;
                }
                let doublings = (self.failures - limits.per_meeting).min(20);
                let delay = Duration::from_secs(1u64 << doublings).min(MAX_LOCK);
                Some(last.plus(delay))
            }
            FailureScope::Address => {
                if self.failures < limits.per_address {
                    return None;
                }
                Some(last.plus(limits.address_window))
            }
        }
    }

    /// `Ok` when a check may proceed now; otherwise the error to answer, with the wait in its message.
    pub fn check(
        &self,
        scope: FailureScope,
        now: Timestamp,
        limits: &GuessLimits,
    ) -> Result<(), DomainError> {
        match self.locked_until(scope, limits) {
            Some(until) if until > now => {
                let wait = now.until(until).as_secs().max(1);
                let code = match scope {
                    FailureScope::Meeting => ErrorCode::LockedOut,
                    FailureScope::Address => ErrorCode::RateLimited,
                };
                Err(DomainError::new(
                    code,
                    format!("{}; retry in {wait} s", code.spec().message),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn meeting_locks_after_100_consecutive_failures_with_a_growing_delay() {
        let mut record = FailureRecord {
            failures: 99,
            last_failure_at: Some(at(1000)),
        };
        assert!(
            record
                .check(FailureScope::Meeting, at(1000), &GuessLimits::default())
                .is_ok()
        );
        record.failures = 100;
        let err = record
            .check(FailureScope::Meeting, at(1000), &GuessLimits::default())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::LockedOut);
        assert!(
            record
                .check(FailureScope::Meeting, at(1001), &GuessLimits::default())
                .is_ok(),
            "first lock lasts 1 s"
        );
        record.failures = 104;
        assert!(
            record
                .check(FailureScope::Meeting, at(1015), &GuessLimits::default())
                .is_err(),
            "16 s after the 104th"
        );
        assert!(
            record
                .check(FailureScope::Meeting, at(1016), &GuessLimits::default())
                .is_ok()
        );
        record.failures = 10_000;
        assert!(
            record
                .check(
                    FailureScope::Meeting,
                    at(1000 + 899),
                    &GuessLimits::default()
                )
                .is_err()
        );
        assert!(
            record
                .check(
                    FailureScope::Meeting,
                    at(1000 + 900),
                    &GuessLimits::default()
                )
                .is_ok(),
            "capped at 15 min"
        );
    }

    #[test]
    fn housekeeping_drops_only_counters_that_no_longer_matter() {
        let now = at(100 * 24 * 3600);
        // An address counter is void once its window has passed: dropping it changes nothing.
        let cut = FailureScope::Address.stale_before(now, &GuessLimits::default());
        assert_eq!(cut, now.minus(ADDRESS_WINDOW));
        let stale = FailureRecord {
            failures: ADDRESS_LIMIT + 5,
            last_failure_at: Some(at(cut.as_millis() / 1000 - 1)),
        };
        assert!(
            stale
                .check(FailureScope::Address, now, &GuessLimits::default())
                .is_ok()
        );
        // A meeting's count is kept for 30 days after its last failure.
        assert_eq!(
            FailureScope::Meeting.stale_before(now, &GuessLimits::default()),
            at((100 - 30) * 24 * 3600)
        );
    }

    #[test]
    fn addresses_are_limited_per_window() {
        let record = FailureRecord {
            failures: ADDRESS_LIMIT,
            last_failure_at: Some(at(0)),
        };
        assert_eq!(
            record
                .check(FailureScope::Address, at(1), &GuessLimits::default())
                .unwrap_err()
                .code,
            ErrorCode::RateLimited
        );
        assert!(
            record
                .check(FailureScope::Address, at(600), &GuessLimits::default())
                .is_ok()
        );
    }
}
