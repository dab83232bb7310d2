//! Seed 004's error shape: HTTP 200 with `{"op", "ts", "error", "message", "result": "FAIL"}`, as
//! the original PHP backend answered (its clients look at `result`, then `error`). The `error`
//! codes are the original's where it had one (`MISSINGEMAIL`, `MISSINGAPPID`, `MISSINGNAME`,
//! `BADCODE`, `BADGROUP`, `MISSINGPARA`, `AUTHFAIL`) and convene's own for what it adds
//! (`BADPARA`, `RATELIMITED`, `LOCKED`, `MAILFAILED`, `BANNED`, `FULL`, `INTERNAL`); `message`
//! (a convene addition) says what went wrong in words. A server fault is the same body with HTTP
//! 500. A request with no known `op` gets `{"code": "NOOP", "result": "FAIL"}` ([`NoOp`]).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use convene_api::ApiError;
use convene_core::service::ServiceError;
use convene_core::{ErrorCode, ValidationError};
use serde::Serialize;

use crate::params::ParamsError;
use crate::session::SessionError;

/// An error of the mesibo surface, before it is rendered with the request's `op` and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MesiboError {
    pub error: &'static str,
    pub message: String,
    /// 200, except 500 for a server fault.
    pub status: StatusCode,
}

pub type Result<T, E = MesiboError> = std::result::Result<T, E>;

/// The failure body.
#[derive(Debug, Serialize)]
pub struct Fail {
    pub op: String,
    pub ts: i64,
    pub error: &'static str,
    pub message: String,
    pub result: &'static str,
}

/// The answer to a request without a known `op`, exactly as documented.
#[derive(Debug, Serialize)]
pub struct NoOp {
    pub code: &'static str,
    pub result: &'static str,
}

impl NoOp {
    pub const ANSWER: NoOp = NoOp {
        code: "NOOP",
        result: "FAIL",
    };
}

impl MesiboError {
    pub fn new(error: &'static str, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            status: StatusCode::OK,
        }
    }

    pub fn missing(parameter: &str) -> Self {
        let error = match parameter {
            "email" => "MISSINGEMAIL",
            "appid" => "MISSINGAPPID",
            "name" => "MISSINGNAME",
            _ => "MISSINGPARA",
        };
        Self::new(error, format!("missing {parameter}"))
    }

    pub fn auth() -> Self {
        Self::new("AUTHFAIL", "missing or invalid token; log in again")
    }

    pub fn bad_group() -> Self {
        Self::new("BADGROUP", "unknown group or wrong pin")
    }

    fn internal() -> Self {
        Self {
            error: "INTERNAL",
            message: ErrorCode::Internal.spec().message.to_owned(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body for a request with this `op`, at `ts` (Unix seconds).
    pub fn render(self, op: &str, ts: i64) -> Response {
        let body = Fail {
            op: op.to_owned(),
            ts,
            error: self.error,
            message: self.message,
            result: "FAIL",
        };
        (self.status, Json(body)).into_response()
    }
}

/// Every core code lands on one of the surface's error codes.
pub fn error_for(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidCombination
        | ErrorCode::PayloadTooLarge
        | ErrorCode::RequestTimeout
        | ErrorCode::MethodNotAllowed
        | ErrorCode::RangeNotSatisfiable
        | ErrorCode::RecordingNotFound
        | ErrorCode::NotFound => "BADPARA",
        ErrorCode::Unauthenticated | ErrorCode::InvalidToken => "AUTHFAIL",
        ErrorCode::InvalidCode => "BADCODE",
        ErrorCode::MeetingAccessDenied
        | ErrorCode::MeetingNotFound
        | ErrorCode::ParticipantNotFound
        | ErrorCode::Forbidden
        | ErrorCode::MeetingLocked
        | ErrorCode::NotAdmitted
        | ErrorCode::MeetingNotLive
        | ErrorCode::MeetingEnded
        | ErrorCode::JoinLinkUsed
        | ErrorCode::InvalidState => "BADGROUP",
        ErrorCode::RateLimited => "RATELIMITED",
        ErrorCode::LockedOut => "LOCKED",
        ErrorCode::Banned => "BANNED",
        ErrorCode::MeetingFull => "FULL",
        ErrorCode::MailFailed => "MAILFAILED",
        ErrorCode::ApiKeyNotFound
        | ErrorCode::AlreadyExists
        | ErrorCode::Busy
        | ErrorCode::Unavailable
        | ErrorCode::Internal => "INTERNAL",
    }
}

impl From<ApiError> for MesiboError {
    fn from(error: ApiError) -> Self {
        match error_for(error.code) {
            // Internal causes are logged where they arise and never shown.
            "INTERNAL" => Self::internal(),
            code => Self::new(code, error.message),
        }
    }
}

impl From<ServiceError> for MesiboError {
    fn from(error: ServiceError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ValidationError> for MesiboError {
    fn from(error: ValidationError) -> Self {
        Self::new("BADPARA", error.to_string())
    }
}

impl From<ParamsError> for MesiboError {
    fn from(error: ParamsError) -> Self {
        match error {
            ParamsError::Missing(name) => Self::missing(&name),
            other => Self::new("BADPARA", other.to_string()),
        }
    }
}

impl From<convene_token::TokenError> for MesiboError {
    fn from(error: convene_token::TokenError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<SessionError> for MesiboError {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Invalid(_) => Self::auth(),
            SessionError::Failed(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_are_opaque_500s_and_the_rest_are_200s() {
        for code in ErrorCode::ALL {
            let error = MesiboError::from(ApiError::new(code, "details at /secret/path"));
            if error.error == "INTERNAL" {
                assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR, "{code}");
                assert!(!error.message.contains("secret"));
            } else {
                assert_eq!(error.status, StatusCode::OK, "{code}");
            }
        }
    }

    #[test]
    fn missing_parameters_use_the_original_codes() {
        assert_eq!(
            MesiboError::from(ParamsError::Missing("email".into())).error,
            "MISSINGEMAIL"
        );
        assert_eq!(
            MesiboError::from(ParamsError::Missing("appid".into())).error,
            "MISSINGAPPID"
        );
        assert_eq!(
            MesiboError::from(ParamsError::Missing("name".into())).error,
            "MISSINGNAME"
        );
        assert_eq!(
            MesiboError::from(ParamsError::Missing("gid".into())).error,
            "MISSINGPARA"
        );
        assert_eq!(
            serde_json::to_value(NoOp::ANSWER).unwrap(),
            serde_json::json!({"code": "NOOP", "result": "FAIL"})
        );
    }
}
