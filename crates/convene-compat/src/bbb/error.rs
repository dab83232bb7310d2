//! Seed 003's error shape: a 4xx or 5xx status with `{"message": "..."}`. Missing parameters are
//! 400 (`missing <name>`), the `Authorization` token 401, a wrong meeting password 403, an unknown
//! meeting 404, a `create_time` of another session and a full meeting 409; other core codes keep
//! the status of convene's error-code table, and 500 is only for real faults (never detailed).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use convene_api::ApiError;
use convene_core::service::ServiceError;
use convene_core::{ErrorCode, ValidationError};
use serde::Serialize;

use crate::params::ParamsError;

/// An error of the BigBlueButton surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BbbError {
    pub status: StatusCode,
    pub message: String,
}

pub type Result<T, E = BbbError> = std::result::Result<T, E>;

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
}

impl BbbError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn missing(name: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("missing {name}"))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid or missing Authorization token",
        )
    }

    pub fn meeting_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "meeting not found")
    }

    pub fn wrong_password() -> Self {
        Self::new(StatusCode::FORBIDDEN, "wrong password for this meeting")
    }

    pub fn create_time_mismatch() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "create_time does not match the current session of this meeting",
        )
    }

    pub fn meeting_full() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "the meeting is full (max_participant reached)",
        )
    }

    pub fn meeting_ended() -> Self {
        Self::new(StatusCode::CONFLICT, "the meeting has ended")
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            message: &self.message,
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for BbbError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl From<ApiError> for BbbError {
    fn from(error: ApiError) -> Self {
        let status = match error.code {
            // The surface answers contradicting values as a bad request, like its own checks.
            ErrorCode::InvalidCombination => StatusCode::BAD_REQUEST,
            code => StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        // Internal causes are logged where they arise and never shown.
        let message = match error.code {
            ErrorCode::Internal | ErrorCode::Busy => error.code.spec().message.to_owned(),
            ErrorCode::MeetingFull => return Self::meeting_full(),
            ErrorCode::MeetingEnded => return Self::meeting_ended(),
            ErrorCode::MeetingNotFound => return Self::meeting_not_found(),
            _ => error.message,
        };
        Self::new(status, message)
    }
}

impl From<ServiceError> for BbbError {
    fn from(error: ServiceError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ValidationError> for BbbError {
    fn from(error: ValidationError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("invalid {}", error))
    }
}

impl From<convene_token::TokenError> for BbbError {
    fn from(error: convene_token::TokenError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ParamsError> for BbbError {
    fn from(error: ParamsError) -> Self {
        match &error {
            ParamsError::Missing(name) => Self::missing(name),
            ParamsError::TooLarge => Self::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string()),
            ParamsError::Malformed(_) | ParamsError::Invalid { .. } | ParamsError::NotUtf8(_) => {
                Self::new(StatusCode::BAD_REQUEST, error.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_a_message_object() {
        let error = BbbError::from(ParamsError::Missing("meeting_id".into()));
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        expect_test::expect![[r#"{"message":"missing meeting_id"}"#]]
            .assert_eq(&error.body().to_string());
        let error = BbbError::from(ValidationError::new(
            "redirect_at_logout",
            "must be an http or https URL",
        ));
        expect_test::expect![[
            r#"{"message":"invalid redirect_at_logout: must be an http or https URL"}"#
        ]]
        .assert_eq(&error.body().to_string());
    }

    #[test]
    fn every_core_code_is_a_4xx_or_5xx_and_internal_faults_are_opaque() {
        for code in ErrorCode::ALL {
            let error = BbbError::from(ApiError::new(code, "detail at /var/lib"));
            assert!(
                error.status.is_client_error() || error.status.is_server_error(),
                "{code}"
            );
            if matches!(code, ErrorCode::Internal | ErrorCode::Busy) {
                assert!(!error.message.contains("/var/lib"), "{code}");
            }
        }
        assert_eq!(
            BbbError::from(ApiError::code(ErrorCode::MeetingFull)),
            BbbError::meeting_full()
        );
    }
}
