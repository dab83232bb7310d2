//! Seed 001's error shape, `{"error": {"message", "explanation"}}`: 400 for a missing parameter
//! (`missing <name>`), 401 for the passcode, 404 for an unknown stream, 500 only for real faults;
//! other core codes keep the status of convene's error-code table.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use convene_api::ApiError;
use convene_core::service::ServiceError;
use convene_core::{ErrorCode, ValidationError};
use serde::Serialize;

use crate::params::ParamsError;

/// An error of the live-stream surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStreamError {
    pub status: StatusCode,
    pub message: String,
    pub explanation: String,
}

pub type Result<T, E = LiveStreamError> = std::result::Result<T, E>;

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    message: &'a str,
    explanation: &'a str,
}

impl LiveStreamError {
    pub fn new(
        status: StatusCode,
        message: impl Into<String>,
        explanation: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            explanation: explanation.into(),
        }
    }

    pub fn missing(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("missing {name}"),
            format!("The {name} parameter is required."),
        )
    }

    pub fn passcode() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "passcode incorrect",
            "The passcode used to validate application users is incorrect.",
        )
    }

    pub fn stream_not_found(explanation: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "stream not found", explanation)
    }

    pub fn user_not_found(identity: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "user not found",
            format!("'{identity}' is not in this stream."),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Body {
            error: Detail {
                message: &self.message,
                explanation: &self.explanation,
            },
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for LiveStreamError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    out.push_str(chars.as_str());
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

impl From<ApiError> for LiveStreamError {
    fn from(error: ApiError) -> Self {
        let spec = error.code.spec();
        let status = match error.code {
            ErrorCode::MeetingAccessDenied
            | ErrorCode::Unauthenticated
            | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            // The seed lists no 422: contradicting values are a bad request here.
            ErrorCode::InvalidCombination => StatusCode::BAD_REQUEST,
            code => StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        // Internal causes are logged where they arise and never shown.
        let explanation = match error.code {
            ErrorCode::Internal | ErrorCode::Busy => sentence(spec.message),
            _ => sentence(&error.message),
        };
        Self::new(status, spec.message, explanation)
    }
}

impl From<ServiceError> for LiveStreamError {
    fn from(error: ServiceError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ValidationError> for LiveStreamError {
    fn from(error: ValidationError) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("invalid {}", error.field),
            sentence(&error.to_string()),
        )
    }
}

impl From<convene_token::TokenError> for LiveStreamError {
    fn from(error: convene_token::TokenError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ParamsError> for LiveStreamError {
    fn from(error: ParamsError) -> Self {
        match &error {
            ParamsError::Missing(name) => Self::missing(name),
            ParamsError::TooLarge => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request too large",
                sentence(&error.to_string()),
            ),
            ParamsError::Malformed(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid request",
                sentence(&error.to_string()),
            ),
            ParamsError::Invalid { name, .. } | ParamsError::NotUtf8(name) => Self::new(
                StatusCode::BAD_REQUEST,
                format!("invalid {name}"),
                sentence(&error.to_string()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parameters_name_the_parameter() {
        let error = LiveStreamError::from(ParamsError::Missing("stream_name".into()));
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        expect_test::expect![[r#"{"error":{"explanation":"The stream_name parameter is required.","message":"missing stream_name"}}"#]]
            .assert_eq(&error.body().to_string());
    }

    #[test]
    fn internal_faults_are_opaque_500s() {
        let error = LiveStreamError::from(ApiError::new(
            ErrorCode::Internal,
            "disk on fire at /var/lib",
        ));
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!error.explanation.contains("disk"));
    }
}
