//! The native API's routes, one module per area.

pub mod access;
pub mod events;
pub mod meetings;
pub mod moderation;
pub mod recordings;
pub mod stream;
pub mod system;
pub mod webhooks;

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use convene_core::ErrorCode;
use convene_core::ids::{Identity, MeetingId};
use convene_core::service::Caller;
use convene_token::TokenKind;

use crate::auth::{AnyCaller, Principal};
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::state::AppState;

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

/// The caller of a call on one's own place in a meeting (join, leave, me, an invitation's
/// answer): a participant's token of this meeting, never the API key.
pub(crate) fn participant_caller(principal: &Principal, id: &MeetingId) -> ApiResult<Caller> {
    match principal.caller_for(id)? {
        Caller::Admin => Err(ApiError::new(
            ErrorCode::Forbidden,
            "this call needs a participant's own token",
        )),
        caller => Ok(caller),
    }
}

/// Who a call on a meeting is open to: how the caller is checked against the meeting.
pub trait CallerRule {
    fn caller(principal: &Principal, id: &MeetingId) -> ApiResult<Caller>;
}

/// Host calls: [`host_caller`].
pub struct Host;

impl CallerRule for Host {
    fn caller(principal: &Principal, id: &MeetingId) -> ApiResult<Caller> {
        host_caller(principal, id)
    }
}

/// A participant's calls on its own place: [`participant_caller`].
pub struct Own;

impl CallerRule for Own {
    fn caller(principal: &Principal, id: &MeetingId) -> ApiResult<Caller> {
        participant_caller(principal, id)
    }
}

/// A call on the meeting in the path (`/v1/meetings/{meeting_id}/...`): authenticated, the id
/// parsed, the caller checked by the rule `R`, in that order.
pub struct Call<R> {
    pub id: MeetingId,
    pub caller: Caller,
    rule: PhantomData<R>,
}

/// A host call on the meeting in the path.
pub type HostCall = Call<Host>;
/// A participant's call on its own place in the meeting in the path.
pub type OwnCall = Call<Own>;

impl<R: CallerRule> FromRequestParts<AppState> for Call<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let AnyCaller(principal) = AnyCaller::from_request_parts(parts, state).await?;
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        let id = meeting_id(&id)?;
        let caller = R::caller(&principal, &id)?;
        Ok(Self {
            id,
            caller,
            rule: PhantomData,
        })
    }
}

/// A host call on one person of the meeting in the path
/// (`/v1/meetings/{meeting_id}/participants/{identity}/...`): as [`HostCall`], then the identity.
pub struct HostCallOn {
    pub id: MeetingId,
    pub caller: Caller,
    pub target: Identity,
}

impl FromRequestParts<AppState> for HostCallOn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let AnyCaller(principal) = AnyCaller::from_request_parts(parts, state).await?;
        let Path((id, who)) = Path::<(String, String)>::from_request_parts(parts, state).await?;
        let id = meeting_id(&id)?;
        let caller = host_caller(&principal, &id)?;
        let target = identity(&who)?;
        Ok(Self { id, caller, target })
    }
}
