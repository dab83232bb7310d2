//! The one error-code table behind every error response, and the core's error types (a
//! validation, a domain rule, the store, a service call).
//!
//! Each [`ErrorCode`] has a fixed code string, HTTP status and default message; the native API
//! renders `{"error": {"code", "message"}}` from it and each compatibility surface maps the same
//! codes into its seed's error shape.

use std::fmt;

use serde::Serialize;

/// Every error convene can answer with. The table in [`ErrorCode::spec`] is the single source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body or a parameter is malformed or fails validation.
    InvalidRequest,
    /// Each value is well-formed, but they contradict each other (credentials that are not
    /// distinct, a schedule that ends before it starts): what a schema cannot say.
    InvalidCombination,
    /// The body is larger than the surface accepts.
    PayloadTooLarge,
    /// The request body did not arrive within the server's body timeout.
    RequestTimeout,
    /// No or unusable admin credentials.
    Unauthenticated,
    /// A token is missing, malformed, expired, of the wrong kind, or for another meeting or run.
    InvalidToken,
    /// The caller is authenticated but may not do this.
    Forbidden,
    /// Unknown meeting or wrong credential: the same answer for both, so ids cannot be probed.
    MeetingAccessDenied,
    /// The meeting does not exist (to an authenticated admin).
    MeetingNotFound,
    /// The participant does not exist in this meeting.
    ParticipantNotFound,
    /// The API key does not exist.
    ApiKeyNotFound,
    /// The recording does not exist in this meeting (or was deleted).
    RecordingNotFound,
    /// A meeting with this id or room name exists already.
    AlreadyExists,
    /// The meeting is not live yet.
    MeetingNotLive,
    /// The meeting has ended.
    MeetingEnded,
    /// The meeting's capacity is reached.
    MeetingFull,
    /// The meeting does not take new participants (policy `deny`).
    MeetingLocked,
    /// The participant is banned from this meeting.
    Banned,
    /// The participant has not been admitted (still waiting, removed or denied).
    NotAdmitted,
    /// The action does not fit the current state (e.g. accept without an invitation).
    InvalidState,
    /// Too many requests from this client.
    RateLimited,
    /// Credential checks for this meeting are locked after too many failures; retry later.
    LockedOut,
    /// A one-time join link was exchanged already.
    JoinLinkUsed,
    /// A download's `Range` is outside the file.
    RangeNotSatisfiable,
    /// The server cannot do this now or in its configuration (recording without a media
    /// engine that records, a file store that is down).
    Unavailable,
    /// A route that does not exist.
    NotFound,
    /// A method the route does not answer.
    MethodNotAllowed,
    /// The store is busy with concurrent changes to the same meeting; retry.
    Busy,
    /// A one-time login code is wrong, expired, used, or void after too many tries.
    InvalidCode,
    /// The mail server did not take a mail (one-time login code).
    MailFailed,
    /// An unexpected server fault (logged with its cause; the answer is opaque).
    Internal,
}

/// One row of the error-code table.
#[derive(Clone, Copy, Debug)]
pub struct ErrorSpec {
    pub code: &'static str,
    pub http_status: u16,
    pub message: &'static str,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 31] = [
        Self::InvalidRequest,
        Self::InvalidCombination,
        Self::PayloadTooLarge,
        Self::RequestTimeout,
        Self::Unauthenticated,
        Self::InvalidToken,
        Self::Forbidden,
        Self::MeetingAccessDenied,
        Self::MeetingNotFound,
        Self::ParticipantNotFound,
        Self::ApiKeyNotFound,
        Self::RecordingNotFound,
        Self::AlreadyExists,
        Self::MeetingNotLive,
        Self::MeetingEnded,
        Self::MeetingFull,
        Self::MeetingLocked,
        Self::Banned,
        Self::NotAdmitted,
        Self::InvalidState,
        Self::RateLimited,
        Self::LockedOut,
        Self::JoinLinkUsed,
        Self::RangeNotSatisfiable,
        Self::Unavailable,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Busy,
        Self::InvalidCode,
        Self::MailFailed,
        Self::Internal,
    ];

    pub const fn spec(self) -> ErrorSpec {
        let (code, http_status, message) = match self {
            Self::InvalidRequest => ("invalid_request", 400, "the request is malformed"),
            Self::InvalidCombination => (
                "invalid_combination",
                422,
                "the values are well-formed but contradict each other",
            ),
            Self::PayloadTooLarge => ("payload_too_large", 413, "the request body is too large"),
            Self::RequestTimeout => (
                "request_timeout",
                408,
                "the request body did not arrive in time",
            ),
            Self::Unauthenticated => ("unauthenticated", 401, "missing or invalid API credentials"),
            Self::InvalidToken => ("invalid_token", 401, "missing, invalid or expired token"),
            Self::Forbidden => ("forbidden", 403, "not allowed"),
            Self::MeetingAccessDenied => (
                "meeting_access_denied",
                403,
                "unknown meeting or wrong credential",
            ),
            Self::MeetingNotFound => ("meeting_not_found", 404, "no such meeting"),
            Self::ParticipantNotFound => ("participant_not_found", 404, "no such participant"),
            Self::ApiKeyNotFound => ("api_key_not_found", 404, "no such API key"),
            Self::RecordingNotFound => ("recording_not_found", 404, "no such recording"),
            Self::AlreadyExists => ("already_exists", 409, "it exists already"),
            Self::MeetingNotLive => ("meeting_not_live", 409, "the meeting has not started"),
            Self::MeetingEnded => ("meeting_ended", 409, "the meeting has ended"),
            Self::MeetingFull => ("meeting_full", 409, "the meeting is full"),
            Self::MeetingLocked => (
                "meeting_locked",
                403,
                "the meeting takes no new participants",
            ),
            Self::Banned => ("banned", 403, "banned from this meeting"),
            Self::NotAdmitted => ("not_admitted", 403, "not admitted to the meeting"),
            Self::InvalidState => ("invalid_state", 409, "not possible in the current state"),
            Self::RateLimited => ("rate_limited", 429, "too many requests; slow down"),
            Self::LockedOut => ("locked_out", 429, "too many failed attempts; retry later"),
            Self::JoinLinkUsed => ("join_link_used", 409, "this join link was used already"),
            Self::RangeNotSatisfiable => (
                "range_not_satisfiable",
                416,
                "the requested range is not within the file",
            ),
            Self::Unavailable => ("unavailable", 503, "not available on this server now"),
            Self::NotFound => ("not_found", 404, "no such route"),
            Self::MethodNotAllowed => ("method_not_allowed", 405, "method not allowed"),
            Self::Busy => ("busy", 503, "the meeting is busy; retry"),
            Self::InvalidCode => ("invalid_code", 401, "wrong, expired or used one-time code"),
            Self::MailFailed => (
                "mail_failed",
                502,
                "the email could not be sent; try again later",
            ),
            Self::Internal => ("internal", 500, "internal server error"),
        };
        ErrorSpec {
            code,
            http_status,
            message,
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.spec().code
    }

    pub const fn http_status(self) -> u16 {
        self.spec().http_status
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that failed validation, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A domain rule refused an action. Carries its code and a message for the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn code(code: ErrorCode) -> Self {
        Self {
            code,
            message: code.spec().message.to_owned(),
        }
    }
}

impl From<ValidationError> for DomainError {
    fn from(value: ValidationError) -> Self {
        Self::new(ErrorCode::InvalidRequest, value.to_string())
    }
}

/// Why the store could not do what was asked (the [`crate::ports::Store`] port's error).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The meeting changed since it was read (optimistic concurrency); reload and retry.
    #[error("the meeting changed concurrently")]
    Conflict,
    /// A unique key (meeting id, room name, API key id) exists already.
    #[error("already exists: {0}")]
    Duplicate(&'static str),
    /// Anything else (connection, disk, corrupt row), with its cause.
    #[error("store failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A failure of a service call: a domain rule, or the store.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Domain(e) => e.code,
            Self::Store(StoreError::Conflict) => ErrorCode::Busy,
            Self::Store(StoreError::Duplicate(_)) => ErrorCode::AlreadyExists,
            Self::Store(StoreError::Backend(_)) => ErrorCode::Internal,
        }
    }

    pub(crate) fn domain(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Domain(DomainError::new(code, message))
    }
}

/// The result of a service call (`crate::service::Result`, the login service's too).
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_table_has_unique_codes_and_sane_statuses() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let spec = code.spec();
            assert!(seen.insert(spec.code), "duplicate code {}", spec.code);
            assert!((400..600).contains(&spec.http_status));
            assert_eq!(serde_json::to_value(code).unwrap(), spec.code);
        }
    }

    #[test]
    fn unknown_meeting_and_wrong_credential_are_one_answer() {
        // The API maps both situations to this single code; its text must not say which.
        let spec = ErrorCode::MeetingAccessDenied.spec();
        assert_eq!(spec.http_status, 403);
        assert!(spec.message.contains("unknown meeting or wrong credential"));
    }
}
