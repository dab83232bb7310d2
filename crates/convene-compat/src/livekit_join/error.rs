//! Seed 002's error shape: `{"msg": "..."}` with the seed's statuses, 400 for a missing or
//! invalid parameter (`Missing required parameter: roomName`) and 500 `Error joining room` for a
//! server fault; plus, since convene checks the "Users" permission itself, 401 without a session
//! or admin key and 403 for a session asking for someone else's `uid` or a room that is not open
//! to it, in the same shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use convene_api::ApiError;
use convene_core::ErrorCode;
use convene_core::service::ServiceError;
use serde::Serialize;

use crate::params::ParamsError;

/// An error of the LiveKit join surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError {
    pub status: StatusCode,
    pub msg: String,
}

pub type Result<T, E = JoinError> = std::result::Result<T, E>;

/// The body of every answer but success.
#[derive(Debug, Serialize)]
pub struct Msg {
    pub msg: String,
}

impl JoinError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
        }
    }

    pub fn missing(parameter: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Missing required parameter: {parameter}"),
        )
    }

    pub fn invalid(parameter: &str, reason: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Invalid parameter: {parameter} {reason}"),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: sign in first (a user session or the admin API key)",
        )
    }

    /// The seed's 500: the cause is logged where it arose and never shown.
    pub fn joining() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Error joining room")
    }
}

impl IntoResponse for JoinError {
    fn into_response(self) -> Response {
        (self.status, Json(Msg { msg: self.msg })).into_response()
    }
}

/// Every core code lands on 400, 401, 403, 429 or the seed's 500.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidCombination
        | ErrorCode::PayloadTooLarge
        | ErrorCode::RequestTimeout
        | ErrorCode::MethodNotAllowed
        | ErrorCode::RangeNotSatisfiable
        | ErrorCode::RecordingNotFound
        | ErrorCode::NotFound => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated | ErrorCode::InvalidToken | ErrorCode::InvalidCode => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::Forbidden
        | ErrorCode::MeetingAccessDenied
        | ErrorCode::MeetingNotFound
        | ErrorCode::ParticipantNotFound
        | ErrorCode::MeetingNotLive
        | ErrorCode::MeetingEnded
        | ErrorCode::MeetingFull
        | ErrorCode::MeetingLocked
        | ErrorCode::Banned
        | ErrorCode::NotAdmitted
        | ErrorCode::JoinLinkUsed
        | ErrorCode::InvalidState => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited | ErrorCode::LockedOut => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ApiKeyNotFound
        | ErrorCode::AlreadyExists
        | ErrorCode::Busy
        | ErrorCode::MailFailed
        | ErrorCode::Unavailable
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<ApiError> for JoinError {
    fn from(error: ApiError) -> Self {
        match status_for(error.code) {
            StatusCode::INTERNAL_SERVER_ERROR => Self::joining(),
            status => Self::new(status, format!("Error joining room: {}", error.message)),
        }
    }
}

impl From<ServiceError> for JoinError {
    fn from(error: ServiceError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<convene_token::TokenError> for JoinError {
    fn from(error: convene_token::TokenError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ParamsError> for JoinError {
    fn from(error: ParamsError) -> Self {
        match error {
            ParamsError::Missing(name) => Self::missing(&name),
            ParamsError::Invalid { name, reason } => Self::invalid(&name, &reason),
            other => Self::new(StatusCode::BAD_REQUEST, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_the_seeds_opaque_500_and_nothing_else_is() {
        for code in ErrorCode::ALL {
            let error = JoinError::from(ApiError::new(code, "cause at /secret/path"));
            if error.status == StatusCode::INTERNAL_SERVER_ERROR {
                assert_eq!(error.msg, "Error joining room", "{code}");
            } else {
                assert!(error.status.is_client_error(), "{code}");
            }
        }
        assert_eq!(
            JoinError::missing("roomName").msg,
            "Missing required parameter: roomName"
        );
    }
}
