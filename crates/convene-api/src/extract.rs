//! Extractors that answer bad input in convene's error shape (400 naming the field, 413 when too large).

use axum::extract::{FromRequest, FromRequestParts};

use crate::error::ApiError;

/// JSON body; malformed JSON or wrong types -> 400 `invalid_request` naming the field.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Query string; wrong types -> 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
