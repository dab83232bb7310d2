//! The native API's error shape, `{"error": {"code", "message"}}`, rendered from the core's one
//! error-code table; internal faults are logged once with their cause and answered opaquely.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use convene_core::service::ServiceError;
use convene_core::{DomainError, ErrorCode, ValidationError};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code from convene's error-code table, e.g. `meeting_not_found`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn code(code: ErrorCode) -> Self {
        Self::new(code, code.spec().message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body())).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Domain(e) => e.into(),
            ServiceError::Store(convene_core::ports::StoreError::Backend(cause)) => {
                internal(cause.as_ref())
            }
            other => Self::code(other.code()),
        }
    }
}

/// Logs the cause of internal faults with its chain before answering.
pub fn internal(cause: &dyn std::error::Error) -> ApiError {
    let mut chain = cause.to_string();
    let mut source = cause.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(cause = %chain, "internal error");
    ApiError::code(ErrorCode::Internal)
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(ErrorCode::InvalidRequest, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Self::code(ErrorCode::PayloadTooLarge)
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                ErrorCode::InvalidRequest,
                "expected a JSON body with Content-Type: application/json",
            ),
            other => Self::new(ErrorCode::InvalidRequest, other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(ErrorCode::InvalidRequest, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(ErrorCode::InvalidRequest, rejection.body_text())
    }
}

impl From<convene_token::TokenError> for ApiError {
    fn from(e: convene_token::TokenError) -> Self {
        Self::new(ErrorCode::InvalidToken, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_the_one_shape() {
        let body =
            serde_json::to_string(&ApiError::code(ErrorCode::MeetingAccessDenied).body()).unwrap();
        expect_test::expect![[r#"{"error":{"code":"meeting_access_denied","message":"unknown meeting or wrong credential"}}"#]].assert_eq(&body);
        let body = serde_json::to_string(
            &ApiError::from(ValidationError::new("name", "must not be empty")).body(),
        )
        .unwrap();
        expect_test::expect![[
            r#"{"error":{"code":"invalid_request","message":"name: must not be empty"}}"#
        ]]
        .assert_eq(&body);
    }

    #[test]
    fn statuses_come_from_the_table() {
        for code in ErrorCode::ALL {
            let response = ApiError::code(code).into_response();
            assert_eq!(response.status().as_u16(), code.http_status());
        }
    }
}
