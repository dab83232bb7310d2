//! The state every handler shares: the meeting service, the token signer, URLs and rate limits.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use convene_core::ErrorCode;
use convene_core::ids::{MeetingId, RecordingId, RoomName};
use convene_core::login::Logins;
use convene_core::meeting::Meeting;
use convene_core::participant::Participant;
use convene_core::ports::StoreError;
use convene_core::service::Meetings;
use convene_token::{ACCESS_TTL, Signer};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;
use crate::realtime::hub::Hub;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub meetings: Arc<Meetings>,
    /// Signs every token convene issues (the primary API key).
    pub signer: Signer,
    /// The URLs clients are given.
    pub urls: PublicUrls,
    pub limits: Arc<Limits>,
    /// The realtime hub: the same one the meeting service publishes committed events to.
    pub hub: Hub,
    /// Email one-time-code login (user sessions; seeds 002 and 004).
    pub logins: Arc<Logins>,
    /// How media access tokens are minted (follows the media engine in use).
    pub media: MediaTokens,
    /// With several nodes running the embedded SFU (never with an external LiveKit): which
    /// node's signalling URL a meeting's media is on. `None`: `urls.rtc`, always.
    pub placement: Option<Arc<dyn MediaPlacement>>,
    /// Where recordings' files are read from and deleted (the data directory or a bucket);
    /// `None`: recordings' files cannot be served here (downloads answer 503).
    pub recording_files: Option<Arc<dyn RecordingFiles>>,
}

/// A byte stream of a stored file.
pub type FileStream =
    futures::stream::BoxStream<'static, Result<axum::body::Bytes, std::io::Error>>;

/// The stored files of recordings, as the binary keeps them.
#[async_trait::async_trait]
pub trait RecordingFiles: Send + Sync + 'static {
    /// The bytes in `range` of file `name` of a recording (all of them with `None`; the caller
    /// checked the range against the size the recording lists).
    async fn open(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
        name: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<FileStream, std::io::Error>;
    /// Removes every file of a recording.
    async fn delete(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
    ) -> Result<(), std::io::Error>;
}

/// Where a media room is when several nodes run the embedded SFU (the binary's placement in the
/// store): each meeting's room is on one node, and every join answer names it.
#[async_trait::async_trait]
pub trait MediaPlacement: Send + Sync + 'static {
    /// The signalling URL of the node holding `room`, placing the room when it has none.
    async fn url(&self, room: &RoomName) -> Result<String, StoreError>;
}

/// How media access tokens are minted, following the media engine in use.
#[derive(Clone, Debug)]
pub enum MediaTokens {
    /// The embedded SFU: convene's access token (it asks the core again at every join).
    Embedded,
    /// An external LiveKit deployment, which cannot ask convene: a plain LiveKit token signed
    /// with its key pair, short-lived, and minted only for an admitted, non-banned person of a
    /// live meeting. Removal, bans and the end of a meeting then act through its RoomService.
    LiveKit { signer: Signer, ttl: Duration },
}

impl AppState {
    /// The signalling URL a joined person of `meeting` is given: this node's, an external
    /// LiveKit's, or (several nodes) the node holding the meeting's media room.
    pub async fn media_url(&self, meeting: &Meeting) -> Result<String, ApiError> {
        match &self.placement {
            Some(placement) => placement
                .url(&meeting.room_name)
                .await
                .map_err(|e| ApiError::from(convene_core::service::ServiceError::from(e))),
            None => Ok(self.urls.rtc.clone()),
        }
    }

    /// The media access token for a joined person, for the media engine in use.
    pub fn media_token(
        &self,
        meeting: &Meeting,
        participant: &Participant,
    ) -> Result<String, ApiError> {
        let now = self.meetings.now();
        match &self.media {
            MediaTokens::Embedded => {
                Ok(self
                    .signer
                    .access_token(meeting, participant, now, ACCESS_TTL)?)
            }
            MediaTokens::LiveKit { signer, ttl } => {
                convene_core::service::may_connect_media(meeting, participant, now)?;
                Ok(signer.livekit_access_token(meeting, participant, now, *ttl)?)
            }
        }
    }

    /// The media token and the convene token of a joined person: the same token with the
    /// embedded engine (it is a convene token), two with an external LiveKit (whose plain tokens
    /// convene does not take for its own API).
    pub fn join_tokens(
        &self,
        meeting: &Meeting,
        participant: &Participant,
    ) -> Result<JoinTokens, ApiError> {
        let media = self.media_token(meeting, participant)?;
        let api = match self.media {
            MediaTokens::Embedded => media.clone(),
            MediaTokens::LiveKit { .. } => self.api_token(meeting, participant)?,
        };
        Ok(JoinTokens { media, api })
    }

    /// A convene access token for the person's own calls to convene (events, leave, hand...).
    pub fn api_token(
        &self,
        meeting: &Meeting,
        participant: &Participant,
    ) -> Result<String, ApiError> {
        Ok(self
            .signer
            .access_token(meeting, participant, self.meetings.now(), ACCESS_TTL)?)
    }
}

/// What [`AppState::join_tokens`] hands out.
#[derive(Clone, Debug)]
pub struct JoinTokens {
    /// For the media engine (LiveKit signalling).
    pub media: String,
    /// For convene's own API: events, chat, leave, hand, moderation.
    pub api: String,
}

/// Where clients reach this server.
#[derive(Clone, Debug)]
pub struct PublicUrls {
    /// Base HTTP URL, e.g. `http://127.0.0.1:7880`.
    pub http: String,
    /// LiveKit signalling URL for clients, e.g. `ws://127.0.0.1:7880`.
    pub rtc: String,
}

impl PublicUrls {
    pub fn events(&self, meeting_id: &str) -> String {
        format!("{}/v1/meetings/{meeting_id}/events", self.http)
    }
}

/// The in-memory limits on unauthenticated calls (entering a meeting, exchanging a join link, the
/// seed surfaces' look-ups), counted per client address (an IPv6 client: its /64) and in all.
/// They stop floods, not guessing: wrong guesses are limited far more strictly by the lockouts in
/// the store (`convene_core::lockout`). So they are loose enough for a crowd behind one address
/// (a company's NAT) entering with the right PIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Calls per second one client address may make, sustained.
    pub per_address: u32,
    /// Calls one client address may make at once before the sustained rate applies.
    pub burst: u32,
    /// Calls per second from everyone (and as many at once).
    pub global: u32,
}

impl Default for RateLimits {
    /// 2,000 people behind one address (a company's NAT) may click at the same moment and all get
    /// in; beyond, 200 a second.
    fn default() -> Self {
        Self {
            per_address: 200,
            burst: 2_000,
            global: 5_000,
        }
    }
}

/// In-memory request-rate limits for unauthenticated look-ups (per client address and global).
/// Credential failures are counted in the store as well, so they hold across restarts and nodes.
pub struct Limits {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
}

impl Limits {
    /// `per_address` requests per second (burst twice that) per client, `global` per second in all.
    pub fn new(per_address: u32, global: u32) -> Self {
        Self::with(RateLimits {
            per_address,
            burst: per_address.saturating_mul(2),
            global,
        })
    }

    pub fn with(limits: RateLimits) -> Self {
        let nonzero = |n: u32| NonZeroU32::new(n.max(1)).expect("max(1)");
        let all = nonzero(limits.global);
        Self {
            per_address: RateLimiter::keyed(
                Quota::per_second(nonzero(limits.per_address)).allow_burst(nonzero(limits.burst)),
            ),
            global: RateLimiter::direct(Quota::per_second(all).allow_burst(all)),
        }
    }

    /// Counts one unauthenticated look-up; `RateLimited` when over either limit.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        if self.per_address.len() > 100_000 {
            self.per_address.retain_recent();
        }
        let client = crate::auth::ClientAddr::network(client);
        if self.per_address.check_key(&client).is_err() || self.global.check().is_err() {
            return Err(ApiError::code(ErrorCode::RateLimited));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::with(RateLimits::default())
    }
}
