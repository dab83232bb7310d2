//! The native API's routes, one module per area.

pub mod access;
pub mod events;
pub mod meetings;
pub mod moderation;
pub mod stream;
pub mod system;
pub mod webhooks;

use convene_core::ids::{Identity, MeetingId};

use crate::error::ApiResult;

pub(crate) fn meeting_id(raw: &str) -> ApiResult<MeetingId> {
    Ok(MeetingId::parse(raw)?)
}

pub(crate) fn identity(raw: &str) -> ApiResult<Identity> {
    Ok(Identity::parse(raw)?)
}
