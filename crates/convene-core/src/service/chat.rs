//! Chat: a participant's message to everyone or to one person.

use crate::error::{DomainError, ErrorCode};
use crate::ids::{ChatText, Identity, MeetingId};
use crate::ops;

use super::{Caller, Meetings, Needs, Result};

impl Meetings {
    /// The caller (a participant) sends a chat message, to everyone or to `to`.
    pub async fn chat(
        &self,
        id: &MeetingId,
        caller: &Caller,
        text: ChatText,
        to: Option<&Identity>,
    ) -> Result<u64> {
        let needs = Needs {
            target: to.cloned(),
            ..Needs::default()
        };
        let (meeting, ()) = self
            .mutate(id, caller, needs, |tx, loaded| {
                let sender = loaded.subject.ok_or_else(|| {
                    DomainError::new(ErrorCode::Forbidden, "only a participant can chat")
                })?;
                if to.is_some() && loaded.target.is_none() {
                    return Err(DomainError::new(
                        ErrorCode::ParticipantNotFound,
                        "the recipient is not in the meeting",
                    ));
                }
                ops::chat(tx, &sender, text.clone(), loaded.target)
            })
            .await?;
        Ok(meeting.last_seq)
    }
}
