//! The state every handler shares: the meeting service, the token signer, URLs and rate limits.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use convene_core::ErrorCode;
use convene_core::login::Logins;
use convene_core::meeting::Meeting;
use convene_core::participant::Participant;
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

/// In-memory request-rate limits for unauthenticated look-ups (per client address and global).
/// Credential failures are counted in the store as well, so they hold across restarts and nodes.
pub struct Limits {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    global: DefaultDirectRateLimiter,
}

impl Limits {
    /// `per_address` requests per second (burst twice that) per client, `global` per second in all.
    pub fn new(per_address: u32, global: u32) -> Self {
        let per = NonZeroU32::new(per_address.max(1)).expect("max(1)");
        let all = NonZeroU32::new(global.max(1)).expect("max(1)");
        Self {
            per_address: RateLimiter::keyed(
                Quota::per_second(per)
                    .allow_burst(per.saturating_mul(NonZeroU32::new(2).expect("2"))),
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
        Self::new(20, 2000)
    }
}
