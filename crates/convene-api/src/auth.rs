//! Who is calling: an admin (API key as Basic auth, or a LiveKit-style admin JWT), or a
//! participant (its own convene token). Extractors turn headers into these, or a 401.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use convene_core::ErrorCode;
use convene_core::apikey::ApiKey;
use convene_core::ids::MeetingId;
use convene_core::service::Caller;
use convene_token::{ParticipantToken, TokenKind};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub enum Principal {
    Admin { key_id: String },
    Participant(ParticipantToken),
}

impl Principal {
    /// The caller as the core sees it, checked against the meeting in the path.
    pub fn caller_for(&self, meeting: &MeetingId) -> ApiResult<Caller> {
        match self {
            Self::Admin { .. } => Ok(Caller::Admin),
            Self::Participant(token) => {
                if &token.meeting != meeting {
                    return Err(ApiError::new(
                        ErrorCode::InvalidToken,
                        "the token is for another meeting",
                    ));
                }
                Ok(Caller::Participant {
                    identity: token.identity.clone(),
                    instance: token.instance.clone(),
                    epoch: token.epoch,
                })
            }
        }
    }
}

async fn active_key(state: &AppState, key_id: &str) -> ApiResult<ApiKey> {
    match state.meetings.api_key(key_id).await? {
        Some(key) if key.is_active() => Ok(key),
        _ => Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "unknown or revoked API key",
        )),
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

/// Authenticates an `Authorization` header value (`Basic` or `Bearer`), accepting participant
/// tokens of the given kinds.
pub async fn authenticate(
    state: &AppState,
    authorization: &str,
    kinds: &[TokenKind],
) -> ApiResult<Principal> {
    let now = state.meetings.now();
    if let Some(encoded) = strip_scheme(authorization, "Basic") {
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| unauthenticated("malformed Basic credentials"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| unauthenticated("malformed Basic credentials"))?;
        let (key_id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("Basic credentials must be key:secret"))?;
        let key = active_key(state, key_id).await?;
        if !bool::from(key.secret.expose().as_bytes().ct_eq(secret.as_bytes())) {
            return Err(unauthenticated("wrong API secret"));
        }
        return Ok(Principal::Admin { key_id: key.id });
    }
    let token = strip_scheme(authorization, "Bearer")
        .ok_or_else(|| unauthenticated("expected Authorization: Basic or Bearer"))?;
    authenticate_token(state, token.trim(), kinds, now).await
}

/// Authenticates a bare token (from a header or an `access_token` query parameter).
pub async fn authenticate_token(
    state: &AppState,
    token: &str,
    kinds: &[TokenKind],
    now: convene_core::Timestamp,
) -> ApiResult<Principal> {
    let issuer = convene_token::issuer(token)?;
    let key = match state.meetings.api_key(&issuer).await? {
        Some(key) if key.is_active() => key,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidToken,
                "unknown or revoked API key",
            ));
        }
    };
    match convene_token::verify_admin(token, &key.secret, now) {
        Ok(_) => return Ok(Principal::Admin { key_id: key.id }),
        Err(convene_token::TokenError::WrongKind) => {}
        Err(e) => return Err(e.into()),
    }
    let verified = convene_token::verify_participant(token, &key.secret, now, kinds)?;
    Ok(Principal::Participant(verified))
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn authorization(parts: &Parts) -> ApiResult<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing Authorization header"))?
        .to_str()
        .map_err(|_| unauthenticated("malformed Authorization header"))
}

/// Authenticates from the `Authorization` header, or else from an `access_token` query parameter
/// (browsers cannot set headers on `EventSource` or `WebSocket`); the header wins when both are given.
pub async fn authenticate_request(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    access_token: Option<&str>,
    kinds: &[TokenKind],
) -> ApiResult<Principal> {
    match (headers.get(AUTHORIZATION), access_token) {
        (Some(value), _) => {
            let value = value
                .to_str()
                .map_err(|_| unauthenticated("malformed Authorization header"))?;
            authenticate(state, value, kinds).await
        }
        (None, Some(token)) => {
            authenticate_token(state, token.trim(), kinds, state.meetings.now()).await
        }
        (None, None) => Err(unauthenticated(
            "missing Authorization header or access_token parameter",
        )),
    }
}

/// An admin (API key holder).
pub struct Admin {
    pub key_id: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, authorization(parts)?, &[]).await {
            Ok(Principal::Admin { key_id }) => Ok(Self { key_id }),
            Ok(Principal::Participant(_))
            | Err(ApiError {
                code: ErrorCode::InvalidToken,
                ..
            }) => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this call needs an API key",
            )),
            Err(e) => Err(e),
        }
    }
}

/// An admin, or a participant presenting an access or waiting-room token.
pub struct AnyCaller(pub Principal);

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(
            state,
            authorization(parts)?,
            &[TokenKind::Access, TokenKind::Waiting],
        )
        .await
        .map(Self)
    }
}

/// The client's address (from the connection; `0.0.0.0` when unknown, e.g. in-process tests).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    pub fn key(&self) -> String {
        self.0.to_string()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(Self(ip))
    }
}
