//! Seed 000's error shape: one of the seed's status codes (400, 403, 404, 500) with a JSON string
//! body beginning `"Error: "` that says what went wrong. Core error codes map onto those four.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use convene_api::ApiError;
use convene_core::service::ServiceError;
use convene_core::{ErrorCode, ValidationError};

use crate::params::ParamsError;

/// An error of the waiting-room surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingRoomError {
    pub status: StatusCode,
    /// What went wrong, without the `Error: ` prefix.
    pub message: String,
}

pub type Result<T, E = WaitingRoomError> = std::result::Result<T, E>;

/// The seed lists only 400, 403, 404 and 500; every core code lands on one of them.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidCombination
        | ErrorCode::PayloadTooLarge
        | ErrorCode::RequestTimeout
        | ErrorCode::MethodNotAllowed
        | ErrorCode::RangeNotSatisfiable => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated
        | ErrorCode::InvalidToken
        | ErrorCode::Forbidden
        | ErrorCode::MeetingAccessDenied
        | ErrorCode::MeetingNotLive
        | ErrorCode::MeetingEnded
        | ErrorCode::MeetingFull
        | ErrorCode::MeetingLocked
        | ErrorCode::Banned
        | ErrorCode::NotAdmitted
        | ErrorCode::InvalidState
        | ErrorCode::RateLimited
        | ErrorCode::LockedOut
        | ErrorCode::InvalidCode
        | ErrorCode::JoinLinkUsed => StatusCode::FORBIDDEN,
        ErrorCode::MeetingNotFound
        | ErrorCode::ParticipantNotFound
        | ErrorCode::ApiKeyNotFound
        | ErrorCode::RecordingNotFound
        | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists
        | ErrorCode::Busy
        | ErrorCode::MailFailed
        | ErrorCode::Unavailable
        | ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl WaitingRoomError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The body: a JSON string, `"Error: ..."`.
    pub fn body(&self) -> String {
        format!("Error: {}", self.message)
    }
}

impl IntoResponse for WaitingRoomError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<ApiError> for WaitingRoomError {
    fn from(error: ApiError) -> Self {
        let message = match error.code {
            // Internal causes are logged where they arise and never shown.
            ErrorCode::Internal | ErrorCode::Busy => error.code.spec().message.to_owned(),
            _ => error.message,
        };
        Self::new(status_for(error.code), message)
    }
}

impl From<ServiceError> for WaitingRoomError {
    fn from(error: ServiceError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ValidationError> for WaitingRoomError {
    fn from(error: ValidationError) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl From<convene_token::TokenError> for WaitingRoomError {
    fn from(error: convene_token::TokenError) -> Self {
        match error {
            convene_token::TokenError::Signing => ApiError::code(ErrorCode::Internal).into(),
            other => Self::forbidden(format!("invalid token: {other}")),
        }
    }
}

impl From<ParamsError> for WaitingRoomError {
    fn from(error: ParamsError) -> Self {
        Self::bad_request(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_a_status_the_seed_lists() {
        for code in ErrorCode::ALL {
            assert!(
                [400, 403, 404, 500].contains(&status_for(code).as_u16()),
                "{code}"
            );
        }
    }

    #[test]
    fn bodies_are_json_strings_starting_with_error() {
        let error = WaitingRoomError::from(ParamsError::Missing("meeting_id".into()));
        assert_eq!(
            serde_json::to_string(&error.body()).unwrap(),
            r#""Error: missing meeting_id""#
        );
        let internal = WaitingRoomError::from(ApiError::new(
            ErrorCode::Internal,
            "db exploded at /secret/path",
        ));
        assert_eq!(internal.body(), "Error: internal server error");
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
