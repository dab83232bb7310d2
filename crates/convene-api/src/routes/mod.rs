//! The native API's routes, one module per area.

pub mod access;
pub mod events;
pub mod meetings;
pub mod moderation;
pub mod stream;
pub mod system;
pub mod webhooks;

use convene_core::ErrorCode;
use convene_core::ids::{Identity, MeetingId};
use convene_core::service::Caller;
use convene_token::TokenKind;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

pub(crate) fn meeting_id(raw: &str) -> ApiResult<MeetingId> {
    Ok(MeetingId::parse(raw)?)
}

pub(crate) fn identity(raw: &str) -> ApiResult<Identity> {
    Ok(Identity::parse(raw)?)
}

/// The caller of a host call (moderation, start, end, the participant list): the API key, or a
/// participant's access token (the core then checks that they are a host still in the meeting).
/// A waiting-room token is a ticket to the waiting room only, whoever holds it: a host joins
/// (`POST .../join`) before moderating, which also puts them in the meeting's presence.
pub(crate) fn host_caller(principal: &Principal, id: &MeetingId) -> ApiResult<Caller> {
    let caller = principal.caller_for(id)?;
    if let Principal::Participant(token) = principal
        && token.kind == TokenKind::Waiting
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a waiting-room token cannot moderate; join the meeting (POST .../join) and use the token it answers",
        ));
    }
    Ok(caller)
}
