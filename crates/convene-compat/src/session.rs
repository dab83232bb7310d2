//! User sessions from the email one-time-code login (seed 004's `op=login`), as the surfaces
//! that accept them issue and check them. A session is a convene `session` token (HS256, signed
//! with the server's API key, `sub` = the user id); it is refused where any other kind of token is
//! expected and vice versa, and it names a user that must still exist.

use std::time::Duration;

use convene_api::AppState;
use convene_api::auth::{StoredKeyError, verify_with_stored_key};
use convene_core::login::{User, UserId};
use convene_core::service::ServiceError;
use convene_token::TokenError;
use rand::Rng;

/// How long a session lasts (the mesibo demo's tokens lasted a year; a month is kinder to users
/// who lose a device and still spares them signing in every day).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a session was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Missing, malformed, expired, of another kind, signed by an unknown key, or for a user that
    /// does not exist: the caller must sign in again.
    #[error("invalid session: {0}")]
    Invalid(String),
    /// The store failed while checking.
    #[error(transparent)]
    Failed(#[from] ServiceError),
}

/// A session token for `user`.
pub fn issue(state: &AppState, user: &User) -> Result<String, TokenError> {
    let nonce: u64 = rand::rng().random();
    state.signer.session_token(
        user.id.as_str(),
        user.name.as_str(),
        &format!("{nonce:016x}"),
        state.meetings.now(),
        SESSION_TTL,
    )
}

/// The signed-in user a session token names.
pub async fn verify(state: &AppState, token: &str) -> Result<User, SessionError> {
    let now = state.meetings.now();
    let session = verify_with_stored_key(&state.meetings, token, |key| {
        convene_token::verify_session(token, &key.secret, now)
    })
    .await
    .map_err(|e| match e {
        StoredKeyError::Store(e) => SessionError::Failed(e),
        StoredKeyError::Token(_) | StoredKeyError::UnknownKey => {
            SessionError::Invalid(e.to_string())
        }
    })?;
    let id = UserId::parse(&session.user)
        .map_err(|_| SessionError::Invalid("malformed token".into()))?;
    state
        .logins
        .user(&id)
        .await?
        .ok_or_else(|| SessionError::Invalid("no such user".into()))
}
