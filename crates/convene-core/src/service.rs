//! The application service: loads what an operation needs from the [`Store`], runs the pure
//! operation from [`crate::ops`], commits the [`Change`] with optimistic concurrency, then hands
//! events to the [`EventSink`] and commands to the [`MediaEngine`]. Every front end (native API,
//! compatibility surfaces, media engine) calls this and nothing below it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::apikey::{ApiKey, ApiSecret};
use crate::error::StoreError;
use crate::error::{DomainError, ErrorCode};
use crate::event::{Event, TrackSelector};
use crate::ids::{
    ChatText, Credential, DisplayName, Identity, InstanceId, MeetingId, MeetingIdDigits, RoomName,
};
use crate::lockout::FailureScope;
use crate::meeting::{Credentials, Meeting, MeetingSettings};
use crate::ops::{self, Actor, Change, Entry, Tx};
use crate::participant::{Participant, ParticipantState, Role};
use crate::ports::{EventSink, MediaEngine, PeopleCount, Store};
use crate::time::Clock;
use crate::time::Timestamp;

/// How many times an operation is retried when another node changed the meeting concurrently.
const MAX_ATTEMPTS: usize = 16;
/// How many fresh ids are tried when a generated meeting id is taken.
const MAX_ID_ATTEMPTS: usize = 8;
/// How long past its expiry a used join-link nonce is kept (more than any token clock leeway).
const JOIN_LINK_SKEW: Duration = Duration::from_secs(300);
/// Largest page of events or meetings one call returns.
pub const MAX_PAGE: u32 = 1000;

pub use crate::error::{Result, ServiceError};

/// Who calls, as established by the transport layer (API key, or a verified participant token).
#[derive(Clone, Debug)]
pub enum Caller {
    Admin,
    /// A participant token: names the person, the run and the epoch it was issued for.
    Participant {
        identity: Identity,
        instance: InstanceId,
        epoch: u32,
    },
}

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

/// Whether a person may be on the meeting's media now (capacity aside): the meeting is live, the
/// person admitted in this run and not banned. The embedded engine asks this at every join; for an
/// external LiveKit it gates minting a media token and is checked again when LiveKit reports a join.
pub fn may_connect_media(
    meeting: &Meeting,
    participant: &Participant,
    now: Timestamp,
) -> std::result::Result<(), DomainError> {
    if participant.is_banned_at(now) {
        return Err(DomainError::code(ErrorCode::Banned));
    }
    if !meeting.is_live() {
        return Err(DomainError::code(ErrorCode::MeetingNotLive));
    }
    let admitted = participant.admitted_in.as_ref() == Some(&meeting.run.instance_id)
        && matches!(
            participant.state,
            ParticipantState::Admitted | ParticipantState::Joined | ParticipantState::Left
        );
    if !admitted {
        return Err(DomainError::code(ErrorCode::NotAdmitted));
    }
    Ok(())
}

/// What the media engine reports.
#[derive(Clone, Debug)]
pub enum MediaReport {
    Connected {
        identity: Identity,
    },
    Disconnected {
        identity: Identity,
    },
    TrackPublished {
        identity: Identity,
        track_sid: String,
        kind: String,
    },
    TrackUnpublished {
        identity: Identity,
        track_sid: String,
    },
}

/// Who the media engine should let in, and with which role.
#[derive(Clone, Debug)]
pub struct MediaAdmission {
    pub meeting: Meeting,
    pub participant: Participant,
}

/// What a presented secret turned out to be, for the guessing limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presented {
    Wrong,
    /// A right credential that is not the host's (or a deployment-wide secret).
    Credential,
    /// The meeting's host credential.
    Host,
}

#[derive(Default)]
struct Needs {
    target: Option<Identity>,
    waiting: bool,
    present: bool,
    joined_count: bool,
    /// A host may present a token of an ended run to start the next one.
    stale_run_ok_for_host: bool,
}

struct Loaded {
    actor: Actor,
    subject: Option<Participant>,
    target: Option<Participant>,
    waiting: Vec<Identity>,
    present: Vec<Participant>,
    joined_count: u64,
}

/// One async mutex per meeting on this node, so operations on one meeting do not race each other
/// here (across nodes, optimistic concurrency in the store decides).
#[derive(Default)]
struct LockTable(Mutex<HashMap<MeetingId, Weak<futures::lock::Mutex<()>>>>);

impl LockTable {
    fn get(&self, id: &MeetingId) -> Arc<futures::lock::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = map.get(id).and_then(Weak::upgrade) {
            return lock;
        }
        if map.len() > 1024 {
            map.retain(|_, weak| weak.strong_count() > 0);
        }
        let lock = Arc::new(futures::lock::Mutex::new(()));
        map.insert(id.clone(), Arc::downgrade(&lock));
        lock
    }
}

/// The meeting service. Cheap to share behind an `Arc`.
pub struct Meetings {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    media: Arc<dyn MediaEngine>,
    sink: Arc<dyn EventSink>,
    locks: LockTable,
    default_digits: MeetingIdDigits,
}

impl Meetings {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        media: Arc<dyn MediaEngine>,
        sink: Arc<dyn EventSink>,
        default_digits: MeetingIdDigits,
    ) -> Self {
        Self {
            store,
            clock,
            media,
            sink,
            locks: LockTable::default(),
            default_digits,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn default_digits(&self) -> MeetingIdDigits {
        self.default_digits
    }

    // ----- meetings -------------------------------------------------------------------------

    pub async fn create_meeting(&self, request: NewMeeting) -> Result<Meeting> {
        let credentials = Credentials::new(
            request.host_credential,
            request.participant_credential,
            request.viewer_credential,
            &mut rand::rng(),
        )
        .and_then(|credentials| credentials.check_distinct().map(|()| credentials))
        .map_err(|e| DomainError::new(ErrorCode::InvalidCombination, e.to_string()))?;
        let digits = request.digits.unwrap_or(self.default_digits);
        for _ in 0..MAX_ID_ATTEMPTS {
            let id = request
                .id
                .clone()
                .unwrap_or_else(|| MeetingId::generate(digits, &mut rand::rng()));
            let change = ops::create_meeting(
                id,
                request.room_name.clone(),
                request.settings.clone(),
                credentials.clone(),
                self.now(),
                &mut rand::rng(),
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
        if let Some(meeting) = self.store.meeting_by_room(room).await? {
            return Ok(meeting);
        }
        let mut new = request();
        new.room_name = Some(room.clone());
        match self.create_meeting(new).await {
            Ok(meeting) => Ok(meeting),
            Err(e) if e.code() == ErrorCode::AlreadyExists => {
                self.store.meeting_by_room(room).await?.ok_or_else(|| {
                    ServiceError::domain(ErrorCode::Internal, "room vanished after a clash")
                })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn meeting(&self, id: &MeetingId) -> Result<Meeting> {
        self.store
            .meeting(id)
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
        Ok(self.store.meeting_by_room(room).await?)
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

    /// A waiting guest's place in the queue (1 = next) where hosts admit one by one (`ask_host`,
    /// or `deny` for those who were waiting before the lock); `None` otherwise. The queue is in
    /// the order people entered the waiting room.
    pub async fn waiting_position(
        &self,
        meeting: &Meeting,
        participant: &Participant,
    ) -> Result<Option<u64>> {
        use crate::meeting::WaitingPolicy;
        let one_by_one = matches!(
            meeting.settings.policy,
            WaitingPolicy::AskHost | WaitingPolicy::Deny
        );
        if participant.state != ParticipantState::Waiting || !one_by_one {
            return Ok(None);
        }
        let ahead = self
            .store
            .count_waiting_before(&meeting.id, participant.updated_at, &participant.identity)
            .await?;
        Ok(Some(ahead + 1))
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
                ops::start_meeting(tx, &loaded.actor, loaded.waiting, &mut rand::rng())
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

    // ----- entering and joining ---------------------------------------------------------------

    /// Someone enters with a meeting id and a credential. Unknown meeting and wrong credential
    /// answer alike; failures are counted per meeting and per client address in the store (see
    /// [`Meetings::check_credential`]: the host credential has its own counter).
    pub async fn enter(
        &self,
        raw_meeting_id: &str,
        credential: &str,
        name: DisplayName,
        identity: Option<Identity>,
        client: &str,
    ) -> Result<(Meeting, Participant)> {
        let meeting = match MeetingId::parse(raw_meeting_id) {
            Ok(id) => self.store.meeting(&id).await?,
            Err(_) => None,
        };
        let role = meeting
            .as_ref()
            .and_then(|m| m.credentials.role_for(credential));
        self.check_credential(&format!("credential:{raw_meeting_id}"), client, role)
            .await?;
        let (Some(meeting), Some(role)) = (meeting, role) else {
            return Err(DomainError::code(ErrorCode::MeetingAccessDenied).into());
        };
        let identity = identity.unwrap_or_else(|| Identity::generate(&mut rand::rng()));
        let entry = Entry {
            identity,
            name,
            role,
            trusted: false,
        };
        self.enter_as(&meeting.id, entry).await
    }

    /// A trusted caller (API key, or a compatibility surface acting for its own authenticated
    /// user) places a person with a role, past the waiting room.
    pub async fn enter_trusted(
        &self,
        id: &MeetingId,
        identity: Identity,
        name: DisplayName,
        role: Role,
    ) -> Result<(Meeting, Participant)> {
        self.enter_as(
            id,
            Entry {
                identity,
                name,
                role,
                trusted: true,
            },
        )
        .await
    }

    /// Like [`Meetings::enter_trusted`], but the person goes through the waiting room by policy
    /// (used by surfaces that authenticate the caller but not the person, e.g. guests).
    pub async fn enter_untrusted(
        &self,
        id: &MeetingId,
        identity: Identity,
        name: DisplayName,
        role: Role,
    ) -> Result<(Meeting, Participant)> {
        self.enter_as(
            id,
            Entry {
                identity,
                name,
                role,
                trusted: false,
            },
        )
        .await
    }

    async fn enter_as(&self, id: &MeetingId, entry: Entry) -> Result<(Meeting, Participant)> {
        let needs = Needs {
            target: Some(entry.identity.clone()),
            ..Needs::default()
        };
        self.mutate(id, &Caller::Admin, needs, |tx, loaded| {
            ops::enter(tx, loaded.target, entry.clone())
        })
        .await
    }

    /// A deployment-wide secret a compatibility surface checks itself (seed 001's passcode, seed
    /// 003's token): one counter under `key` (consecutive failures, with the doubling lock) and
    /// the client address's. `MeetingAccessDenied` when wrong.
    pub async fn check_guess(&self, key: &str, client: &str, correct: bool) -> Result<()> {
        let presented = if correct {
            Presented::Credential
        } else {
            Presented::Wrong
        };
        self.check_presented(key, client, presented).await
    }

    /// The guessing limits around one meeting credential check (NIST SP 800-63B 5.2.2), for the
    /// native `enter` and the surfaces that check PINs and passwords themselves. `granted` is the
    /// role the presented credential grants (`None`: wrong, or no such meeting; both answer
    /// `MeetingAccessDenied` and count alike).
    ///
    /// Two counters per meeting `key`, both in the store: the participant and viewer
    /// credentials' (`key`), and the host credential's (`key#host`). A wrong guess counts against
    /// the first while it is open; while it is locked, a wrong guess could only have been meant
    /// for the host credential, so it counts against the host's, and is answered with the same
    /// lock. So an attacker who locks a meeting's PIN checks does not lock out its host, who gets
    /// in until the host credential itself is attacked; then it locks with the same doubling
    /// delay. Each success clears its own counter. The client address's counter (30 failures in
    /// 10 minutes) is checked first and counts every failure. The API key is never counted.
    pub async fn check_credential(
        &self,
        key: &str,
        client: &str,
        granted: Option<Role>,
    ) -> Result<()> {
        let presented = match granted {
            None => Presented::Wrong,
            Some(Role::Host) => Presented::Host,
            Some(_) => Presented::Credential,
        };
        self.check_presented(key, client, presented).await
    }

    async fn check_presented(&self, key: &str, client: &str, presented: Presented) -> Result<()> {
        let now = self.now();
        self.store
            .failures(FailureScope::Address, client)
            .await?
            .check(FailureScope::Address, now)?;
        let host_key = format!("{key}#host");
        let shared = self
            .store
            .failures(FailureScope::Meeting, key)
            .await?
            .check(FailureScope::Meeting, now);
        match (presented, shared) {
            (Presented::Host, _) => {
                self.store
                    .failures(FailureScope::Meeting, &host_key)
                    .await?
                    .check(FailureScope::Meeting, now)?;
                self.store
                    .clear_failures(FailureScope::Meeting, &host_key)
                    .await?;
                Ok(())
            }
            (Presented::Credential, shared) => {
                shared?;
                self.store
                    .clear_failures(FailureScope::Meeting, key)
                    .await?;
                Ok(())
            }
            (Presented::Wrong, Ok(())) => {
                self.count_failure(FailureScope::Meeting, key, now).await?;
                self.count_failure(FailureScope::Address, client, now)
                    .await?;
                Err(DomainError::code(ErrorCode::MeetingAccessDenied).into())
            }
            (Presented::Wrong, Err(locked)) => {
                self.store
                    .failures(FailureScope::Meeting, &host_key)
                    .await?
                    .check(FailureScope::Meeting, now)?;
                self.count_failure(FailureScope::Meeting, &host_key, now)
                    .await?;
                self.count_failure(FailureScope::Address, client, now)
                    .await?;
                Err(locked.into())
            }
        }
    }

    /// A look-up by meeting id alone, where the id is the only secret (seed 000's anonymous
    /// guests): `found` says whether the id named a meeting. The client address's failure
    /// counter is checked first, so a locked-out address learns nothing, not even about an id
    /// that exists (`RateLimited`); an unknown id counts as a failure (`MeetingNotFound`). With
    /// at most 30 failures per address in 10 minutes, an address tries at most 4,320 ids a day.
    pub async fn check_id_lookup(&self, client: &str, found: bool) -> Result<()> {
        let now = self.now();
        self.store
            .failures(FailureScope::Address, client)
            .await?
            .check(FailureScope::Address, now)?;
        if found {
            return Ok(());
        }
        self.count_failure(FailureScope::Address, client, now)
            .await?;
        Err(DomainError::code(ErrorCode::MeetingNotFound).into())
    }

    async fn count_failure(
        &self,
        scope: FailureScope,
        subject: &str,
        now: Timestamp,
    ) -> Result<()> {
        let forget_before = scope
            .window()
            .map(|w| Timestamp::from_millis(now.as_millis() - w.as_millis() as i64));
        self.store
            .record_failure(scope, subject, now, forget_before)
            .await?;
        Ok(())
    }

    /// An admitted person asks for media access; a host's join starts the meeting.
    pub async fn join(&self, id: &MeetingId, caller: &Caller) -> Result<(Meeting, Participant)> {
        let needs = Needs {
            waiting: true,
            joined_count: true,
            stale_run_ok_for_host: true,
            ..Needs::default()
        };
        self.mutate(id, caller, needs, |tx, loaded| {
            let subject = loaded.subject.ok_or_else(|| {
                DomainError::new(ErrorCode::Forbidden, "only a participant can join")
            })?;
            ops::join(
                tx,
                subject,
                loaded.joined_count,
                loaded.waiting,
                &mut rand::rng(),
            )
        })
        .await
    }

    pub async fn leave(&self, id: &MeetingId, caller: &Caller) -> Result<()> {
        self.mutate(id, caller, Needs::default(), |tx, loaded| {
            let subject = loaded.subject.ok_or_else(|| {
                DomainError::new(ErrorCode::Forbidden, "only a participant can leave")
            })?;
            ops::leave(tx, subject)
        })
        .await
        .map(|_| ())
    }

    // ----- waiting room -----------------------------------------------------------------------

    pub async fn admit(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
    ) -> Result<Participant> {
        self.on_target(id, caller, target, ops::admit).await
    }

    pub async fn admit_all(&self, id: &MeetingId, caller: &Caller) -> Result<Meeting> {
        let needs = Needs {
            waiting: true,
            ..Needs::default()
        };
        let (meeting, ()) = self
            .mutate(id, caller, needs, |tx, loaded| {
                ops::admit_all(tx, &loaded.actor, loaded.waiting)
            })
            .await?;
        Ok(meeting)
    }

    pub async fn deny(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::deny).await
    }

    pub async fn send_back(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
    ) -> Result<()> {
        self.on_target(id, caller, target, ops::send_back).await
    }

    // ----- stage ------------------------------------------------------------------------------

    /// The caller raises or lowers their own hand; an admin may do it for `target`.
    pub async fn set_hand(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: Option<&Identity>,
        raised: bool,
    ) -> Result<()> {
        let needs = Needs {
            target: target.cloned(),
            ..Needs::default()
        };
        self.mutate(id, caller, needs, |tx, loaded| {
            let who = match (&loaded.actor, loaded.target, loaded.subject) {
                (Actor::Admin, Some(t), _) => t,
                (_, _, Some(s)) => s,
                _ => return Err(DomainError::code(ErrorCode::ParticipantNotFound)),
            };
            ops::set_hand(tx, who, raised)
        })
        .await
        .map(|_| ())
    }

    pub async fn invite(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::invite).await
    }

    /// The caller answers their own invitation; an admin may answer for `target`.
    pub async fn answer_invite(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: Option<&Identity>,
        accept: bool,
    ) -> Result<()> {
        let needs = Needs {
            target: target.cloned(),
            ..Needs::default()
        };
        self.mutate(id, caller, needs, |tx, loaded| {
            let who = match (&loaded.actor, loaded.target, loaded.subject) {
                (Actor::Admin, Some(t), _) => t,
                (_, _, Some(s)) => s,
                _ => return Err(DomainError::code(ErrorCode::ParticipantNotFound)),
            };
            ops::answer_invite(tx, who, accept)
        })
        .await
        .map(|_| ())
    }

    pub async fn set_role(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        role: Role,
    ) -> Result<Participant> {
        self.on_target(id, caller, target, move |tx, actor, t| {
            let identity = t.identity.clone();
            ops::set_role(tx, actor, t, role)?;
            Ok(identity)
        })
        .await?;
        self.participant(id, target).await
    }

    // ----- moderation -------------------------------------------------------------------------

    pub async fn remove(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::remove).await
    }

    pub async fn ban(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        duration: Option<Duration>,
    ) -> Result<()> {
        self.on_target(id, caller, target, move |tx, actor, t| {
            ops::ban(tx, actor, t, duration)
        })
        .await
    }

    pub async fn unban(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::unban).await
    }

    pub async fn mute(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        track: TrackSelector,
        muted: bool,
    ) -> Result<()> {
        self.on_target(id, caller, target, move |tx, actor, t| {
            ops::mute(tx, actor, &t, track.clone(), muted)
        })
        .await
    }

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

    // ----- reads ------------------------------------------------------------------------------

    pub async fn participant(&self, id: &MeetingId, identity: &Identity) -> Result<Participant> {
        self.store
            .participant(id, identity)
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

    /// Checks that a participant token still stands: the person exists, the token's run is the
    /// meeting's current run, and its epoch is current (remove, deny and ban bump it).
    pub async fn check_participant_token(
        &self,
        id: &MeetingId,
        identity: &Identity,
        instance: &InstanceId,
        epoch: u32,
    ) -> Result<(Meeting, Participant)> {
        let meeting = self
            .store
            .meeting(id)
            .await?
            .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
        let participant = self
            .store
            .participant(id, identity)
            .await?
            .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
        if &meeting.run.instance_id != instance {
            return Err(ServiceError::domain(
                ErrorCode::InvalidToken,
                "the token is for an earlier run of this meeting",
            ));
        }
        if participant.epoch != epoch {
            return Err(ServiceError::domain(
                ErrorCode::InvalidToken,
                "the token has been revoked",
            ));
        }
        if participant.is_banned_at(self.now()) {
            return Err(DomainError::code(ErrorCode::Banned).into());
        }
        Ok((meeting, participant))
    }

    /// Redeems a one-time join link (the BigBlueButton surface's credential), whose signature
    /// and expiry the caller has verified: the link must still stand like a participant token
    /// (same run, same epoch, not banned), and its `nonce` is marked used in the store, so a
    /// second redemption fails with `join_link_used` on every node, concurrent or after a restart.
    /// An admitted person is joined at once (capacity applies); a waiting one stays waiting.
    pub async fn redeem_join_link(
        &self,
        id: &MeetingId,
        identity: &Identity,
        instance: &InstanceId,
        epoch: u32,
        nonce: &str,
        expires_at: Timestamp,
    ) -> Result<(Meeting, Participant)> {
        if nonce.is_empty() {
            return Err(ServiceError::domain(
                ErrorCode::InvalidToken,
                "the join link has no nonce",
            ));
        }
        let (meeting, participant) = self
            .check_participant_token(id, identity, instance, epoch)
            .await?;
        // Used nonces are kept until their link has expired (allowing for clock skew).
        let forget_before = Timestamp::from_millis(
            self.now()
                .as_millis()
                .saturating_sub(JOIN_LINK_SKEW.as_millis() as i64),
        );
        if !self
            .store
            .use_nonce(nonce, expires_at, forget_before)
            .await?
        {
            return Err(DomainError::code(ErrorCode::JoinLinkUsed).into());
        }
        if participant.state == ParticipantState::Waiting {
            return Ok((meeting, participant));
        }
        let caller = Caller::Participant {
            identity: identity.clone(),
            instance: instance.clone(),
            epoch,
        };
        self.join(id, &caller).await
    }

    // ----- media engine -----------------------------------------------------------------------

    /// The media engine's admission check: a token is not enough. The meeting must be live, the
    /// person admitted in this run and not banned, and the room under capacity.
    pub async fn media_admission(
        &self,
        id: &MeetingId,
        identity: &Identity,
        instance: &InstanceId,
        epoch: u32,
    ) -> Result<MediaAdmission> {
        let (meeting, participant) = self
            .check_participant_token(id, identity, instance, epoch)
            .await?;
        may_connect_media(&meeting, &participant, self.now())?;
        self.check_media_capacity(&meeting, &participant).await?;
        Ok(MediaAdmission {
            meeting,
            participant,
        })
    }

    /// Whether `participant` may take a media connection: in a meeting with a capacity, fails
    /// with `meeting_full` when that many others already hold one. Hosts are never refused, and a
    /// person already connected keeps their place.
    pub async fn check_media_capacity(
        &self,
        meeting: &Meeting,
        participant: &Participant,
    ) -> Result<()> {
        let Some(capacity) = meeting.settings.capacity else {
            return Ok(());
        };
        if participant.role == Role::Host || participant.media_connected {
            return Ok(());
        }
        let connected = self
            .store
            .count_media_connected(&meeting.id, &participant.identity)
            .await?;
        if connected >= u64::from(capacity) {
            return Err(DomainError::code(ErrorCode::MeetingFull).into());
        }
        Ok(())
    }

    /// Housekeeping: drops failure counters that no longer change any answer (an address's after
    /// its window, a meeting's [`crate::lockout::MEETING_FORGET`] after its last failure).
    pub async fn prune_failures(&self) -> Result<u64> {
        let now = self.now();
        let mut pruned = 0;
        for scope in [FailureScope::Address, FailureScope::Meeting] {
            pruned += self
                .store
                .prune_failures(scope, scope.stale_before(now))
                .await?;
        }
        Ok(pruned)
    }

    /// Records what the media engine saw (connections and tracks) in the meeting's log.
    pub async fn media_report(&self, room: &RoomName, report: MediaReport) -> Result<()> {
        let Some(meeting) = self.store.meeting_by_room(room).await? else {
            return Ok(());
        };
        let identity = match &report {
            MediaReport::Connected { identity }
            | MediaReport::Disconnected { identity }
            | MediaReport::TrackPublished { identity, .. }
            | MediaReport::TrackUnpublished { identity, .. } => identity.clone(),
        };
        let needs = Needs {
            target: Some(identity),
            ..Needs::default()
        };
        self.mutate(&meeting.id, &Caller::Admin, needs, |tx, loaded| {
            let Some(target) = loaded.target else {
                return Ok(());
            };
            match report.clone() {
                MediaReport::Connected { .. } => ops::media_presence(tx, target, true),
                MediaReport::Disconnected { .. } => ops::media_presence(tx, target, false),
                MediaReport::TrackPublished {
                    identity,
                    track_sid,
                    kind,
                } => ops::media_track(tx, identity, track_sid, Some(kind)),
                MediaReport::TrackUnpublished {
                    identity,
                    track_sid,
                } => ops::media_track(tx, identity, track_sid, None),
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    // ----- API keys ---------------------------------------------------------------------------

    pub async fn create_api_key(&self, description: &str) -> Result<ApiKey> {
        let key = ApiKey::generate(description, self.now(), &mut rand::rng());
        self.store.insert_api_key(&key).await?;
        Ok(key)
    }

    /// Stores a configured key pair (`CONVENE_API_KEY` / `CONVENE_API_SECRET`) unless present.
    pub async fn provision_api_key(&self, id: &str, secret: ApiSecret) -> Result<ApiKey> {
        let id = ApiKey::parse_id(id).map_err(DomainError::from)?;
        if let Some(existing) = self.store.api_key(&id).await? {
            if existing.secret == secret && existing.is_active() {
                return Ok(existing);
            }
            return Err(ServiceError::domain(
                ErrorCode::AlreadyExists,
                format!(
                    "API key {id} is stored with another secret or revoked; revoke it or choose another key id"
                ),
            ));
        }
        let key = ApiKey {
            id,
            secret,
            description: "provisioned from configuration".into(),
            created_at: self.now(),
            revoked_at: None,
        };
        self.store.insert_api_key(&key).await?;
        Ok(key)
    }

    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(self.store.api_key(id).await?)
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self.store.api_keys().await?)
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<()> {
        if self.store.revoke_api_key(id, self.now()).await? {
            Ok(())
        } else {
            Err(DomainError::code(ErrorCode::ApiKeyNotFound).into())
        }
    }

    // ----- the machinery ----------------------------------------------------------------------

    async fn on_target<T>(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        op: impl Fn(&mut Tx, &Actor, Participant) -> Result<T, DomainError>,
    ) -> Result<T> {
        let needs = Needs {
            target: Some(target.clone()),
            ..Needs::default()
        };
        self.mutate(id, caller, needs, |tx, loaded| {
            let target = loaded
                .target
                .ok_or_else(|| DomainError::code(ErrorCode::ParticipantNotFound))?;
            op(tx, &loaded.actor, target)
        })
        .await
        .map(|(_, value)| value)
    }

    async fn load(&self, meeting: &Meeting, caller: &Caller, needs: &Needs) -> Result<Loaded> {
        let id = &meeting.id;
        let (actor, subject) = match caller {
            Caller::Admin => (Actor::Admin, None),
            Caller::Participant {
                identity,
                instance,
                epoch,
            } => {
                let participant = self
                    .store
                    .participant(id, identity)
                    .await?
                    .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
                let stale_ok = needs.stale_run_ok_for_host
                    && participant.role == Role::Host
                    && meeting.status == crate::meeting::MeetingStatus::Ended;
                if &meeting.run.instance_id != instance && !stale_ok {
                    return Err(ServiceError::domain(
                        ErrorCode::InvalidToken,
                        "the token is for an earlier run of this meeting",
                    ));
                }
                if participant.epoch != *epoch {
                    return Err(ServiceError::domain(
                        ErrorCode::InvalidToken,
                        "the token has been revoked",
                    ));
                }
                (Actor::Participant(participant.clone()), Some(participant))
            }
        };
        let target = match &needs.target {
            Some(identity) => self.store.participant(id, identity).await?,
            None => None,
        };
        let waiting = if needs.waiting {
            self.store.waiting_identities(id).await?
        } else {
            Vec::new()
        };
        let present = if needs.present {
            self.store
                .participants(
                    id,
                    Some(&[
                        ParticipantState::Waiting,
                        ParticipantState::Admitted,
                        ParticipantState::Joined,
                    ]),
                )
                .await?
        } else {
            Vec::new()
        };
        let joined_count = if needs.joined_count {
            self.store
                .count_participants(id, &[ParticipantState::Joined])
                .await?
        } else {
            0
        };
        Ok(Loaded {
            actor,
            subject,
            target,
            waiting,
            present,
            joined_count,
        })
    }

    async fn mutate<T>(
        &self,
        id: &MeetingId,
        caller: &Caller,
        needs: Needs,
        mut op: impl FnMut(&mut Tx, Loaded) -> Result<T, DomainError>,
    ) -> Result<(Meeting, T)> {
        let lock = self.locks.get(id);
        let _guard = lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let meeting = self.meeting(id).await?;
            let loaded = self.load(&meeting, caller, &needs).await?;
            let mut tx = Tx::new(meeting, self.now());
            let value = op(&mut tx, loaded)?;
            let unchanged = tx.meeting().clone();
            let Some(change) = tx.finish() else {
                return Ok((unchanged, value));
            };
            match self.store.commit(&change).await {
                Ok(()) => {
                    self.after_commit(&change).await;
                    return Ok((change.meeting, value));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::code(ErrorCode::Busy).into())
    }

    async fn after_commit(&self, change: &Change) {
        self.sink.publish(&change.events);
        if !change.media.is_empty() {
            self.media.apply(&change.media).await;
        }
    }
}
