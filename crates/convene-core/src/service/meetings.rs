//! Meetings: creating (or finding a room's), configuring, starting and ending them, and reading
//! them, their people and their event log.

use crate::error::{DomainError, ErrorCode, StoreError};
use crate::event::Event;
use crate::ids::{Credential, Identity, MeetingId, MeetingIdDigits, RoomName};
use crate::meeting::{Credentials, Meeting, MeetingSettings};
use crate::ops;
use crate::participant::{Participant, ParticipantState};
use crate::ports::PeopleCount;

use super::{Caller, MAX_PAGE, Meetings, Needs, Result, ServiceError};

/// How many fresh ids are tried when a generated meeting id is taken.
const MAX_ID_ATTEMPTS: usize = 8;

/// A request to create a meeting.
#[derive(Clone, Debug)]
pub struct NewMeeting {
    /// Exactly this id (compatibility surfaces), or `None` to generate one.
    pub id: Option<MeetingId>,
    pub digits: Option<MeetingIdDigits>,
    pub room_name: Option<RoomName>,
    pub settings: MeetingSettings,
    pub host_credential: Option<Credential>,
    pub participant_credential: Option<Credential>,
    pub viewer_credential: Option<Credential>,
}

impl Meetings {
    pub async fn create_meeting(&self, request: NewMeeting) -> Result<Meeting> {
        if request.settings.auto_record {
            self.require_recorder()?;
        }
        let credentials = Credentials::new(
            request.host_credential,
            request.participant_credential,
            request.viewer_credential,
            &mut self.rng(),
        )
        .and_then(|credentials| credentials.check_distinct().map(|()| credentials))
        .map_err(|e| DomainError::new(ErrorCode::InvalidCombination, e.to_string()))?;
        let digits = request.digits.unwrap_or(self.default_digits);
        for _ in 0..MAX_ID_ATTEMPTS {
            let id = request
                .id
                .clone()
                .unwrap_or_else(|| MeetingId::generate(digits, &mut self.rng()));
            let change = ops::create_meeting(
                id,
                request.room_name.clone(),
                request.settings.clone(),
                credentials.clone(),
                self.now(),
                &mut self.rng(),
            );
            match self.store.create_meeting(&change).await {
                Ok(()) => {
                    self.after_commit(&change).await;
                    return Ok(change.meeting);
                }
                Err(StoreError::Duplicate("meeting_id")) if request.id.is_none() => continue,
                Err(StoreError::Duplicate(what)) => {
                    return Err(ServiceError::domain(
                        ErrorCode::AlreadyExists,
                        format!("a meeting with this {what} exists already"),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::domain(
            ErrorCode::AlreadyExists,
            "no free meeting id of this length; use more digits",
        ))
    }

    /// The meeting for a room name, created with `request` when absent (compatibility surfaces
    /// where the room appears on first use, as in LiveKit).
    pub async fn ensure_room(
        &self,
        room: &RoomName,
        request: impl Fn() -> NewMeeting,
    ) -> Result<Meeting> {
        if let Some(meeting) = self.committed_meeting_by_room(room).await? {
            return Ok(meeting);
        }
        let mut new = request();
        new.room_name = Some(room.clone());
        match self.create_meeting(new).await {
            Ok(meeting) => Ok(meeting),
            Err(e) if e.code() == ErrorCode::AlreadyExists => {
                self.committed_meeting_by_room(room).await?.ok_or_else(|| {
                    ServiceError::domain(ErrorCode::Internal, "room vanished after a clash")
                })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn meeting(&self, id: &MeetingId) -> Result<Meeting> {
        self.committed_meeting(id)
            .await?
            .ok_or_else(|| DomainError::code(ErrorCode::MeetingNotFound).into())
    }

    /// Webhook deliveries (the outbox), for the API. A filter naming an unknown meeting is a 404.
    pub async fn webhook_deliveries(
        &self,
        filter: &crate::webhook::DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<crate::webhook::WebhookDelivery>> {
        if let Some(id) = &filter.meeting {
            self.meeting(id).await?;
        }
        Ok(self.store.webhook_deliveries(filter, limit).await?)
    }

    pub async fn meeting_by_room(&self, room: &RoomName) -> Result<Option<Meeting>> {
        self.committed_meeting_by_room(room).await
    }

    pub async fn meetings(&self, after: Option<&MeetingId>, limit: u32) -> Result<Vec<Meeting>> {
        Ok(self.store.meetings(after, limit.clamp(1, MAX_PAGE)).await?)
    }

    pub async fn update_meeting(
        &self,
        id: &MeetingId,
        settings: MeetingSettings,
        credentials: Option<Credentials>,
    ) -> Result<Meeting> {
        if settings.auto_record {
            self.require_recorder()?;
        }
        let needs = Needs {
            waiting: true,
            ..Needs::default()
        };
        let (meeting, ()) = self
            .mutate(id, &Caller::Admin, needs, |tx, loaded| {
                ops::update_meeting(
                    tx,
                    &loaded.actor,
                    settings.clone(),
                    credentials.clone(),
                    loaded.waiting,
                )
            })
            .await?;
        Ok(meeting)
    }

    /// A host (or an admin) changes who gets in (`deny` locks the meeting).
    pub async fn set_policy(
        &self,
        id: &MeetingId,
        caller: &Caller,
        policy: crate::meeting::WaitingPolicy,
    ) -> Result<Meeting> {
        let needs = Needs {
            waiting: true,
            ..Needs::default()
        };
        let (meeting, ()) = self
            .mutate(id, caller, needs, |tx, loaded| {
                ops::set_policy(tx, &loaded.actor, policy, loaded.waiting)
            })
            .await?;
        Ok(meeting)
    }

    /// Meetings ordered by id, after `after`, with how many people are in each now. With
    /// `search`, only those whose id or name contains it (case-insensitive): the store is read
    /// page by page until `limit` match, so a search reads every meeting at worst (an admin's
    /// look-up, not a hot path).
    pub async fn meeting_summaries(
        &self,
        search: Option<&str>,
        after: Option<&MeetingId>,
        limit: u32,
    ) -> Result<Vec<(Meeting, PeopleCount)>> {
        let limit = limit.clamp(1, MAX_PAGE);
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let mut found = Vec::new();
        let mut cursor = after.cloned();
        loop {
            let page_size = if needle.is_some() { MAX_PAGE } else { limit };
            let page = self.store.meetings(cursor.as_ref(), page_size).await?;
            let last_page = (page.len() as u32) < page_size;
            cursor = page.last().map(|m| m.id.clone());
            for meeting in page {
                let matches = needle.as_deref().is_none_or(|needle| {
                    meeting.id.as_str().contains(needle)
                        || meeting
                            .settings
                            .name
                            .as_str()
                            .to_lowercase()
                            .contains(needle)
                });
                if matches && (found.len() as u32) < limit {
                    found.push(meeting);
                }
            }
            if last_page || found.len() as u32 >= limit {
                break;
            }
        }
        let ids: Vec<MeetingId> = found.iter().map(|m| m.id.clone()).collect();
        let mut counts = self.store.people_counts(&ids).await?;
        Ok(found
            .into_iter()
            .map(|m| {
                let count = counts.remove(&m.id).unwrap_or_default();
                (m, count)
            })
            .collect())
    }

    pub async fn start_meeting(&self, id: &MeetingId, caller: &Caller) -> Result<Meeting> {
        let needs = Needs {
            waiting: true,
            ..Needs::default()
        };
        let (meeting, ()) = self
            .mutate(id, caller, needs, |tx, loaded| {
                if !loaded.actor.is_host(tx.now()) {
                    return Err(DomainError::new(
                        ErrorCode::Forbidden,
                        "only a host may start the meeting",
                    ));
                }
                ops::start_meeting(tx, &loaded.actor, loaded.waiting, &mut self.rng())
            })
            .await?;
        Ok(meeting)
    }

    pub async fn end_meeting(&self, id: &MeetingId, caller: &Caller) -> Result<Meeting> {
        let needs = Needs {
            present: true,
            ..Needs::default()
        };
        let (meeting, ()) = self
            .mutate(id, caller, needs, |tx, loaded| {
                ops::end_meeting(tx, &loaded.actor, loaded.present)
            })
            .await?;
        Ok(meeting)
    }

    pub async fn participant(&self, id: &MeetingId, identity: &Identity) -> Result<Participant> {
        self.committed_person(id, identity)
            .await?
            .ok_or_else(|| DomainError::code(ErrorCode::ParticipantNotFound).into())
    }

    pub async fn participants(
        &self,
        id: &MeetingId,
        states: Option<&[ParticipantState]>,
    ) -> Result<Vec<Participant>> {
        self.meeting(id).await?;
        Ok(self.store.participants(id, states).await?)
    }

    pub async fn events_after(&self, id: &MeetingId, after: u64, limit: u32) -> Result<Vec<Event>> {
        Ok(self
            .store
            .events_after(id, after, limit.clamp(1, MAX_PAGE))
            .await?)
    }
}
