//! convene's tokens: LiveKit-format JWTs (HS256, `iss` = API key, `sub` = identity, `video`
//! grant) with a `convene` claim that says which kind of token it is and which meeting run,
//! person and epoch it is bound to.
//!
//! Kinds are never interchangeable (RFC 8725 3.11), and a token's kind is read from what it says,
//! never inferred from what it lacks: a waiting-room token has no `roomJoin` and is refused where
//! an access token is expected; an admin credential is a token whose `convene` claim says `admin`,
//! or a LiveKit server-API token (`roomCreate` or `roomList`, no `roomJoin`), never a media token
//! (a host's `roomAdmin` included). Verification takes the time as a parameter and allows
//! [`LEEWAY`] of clock skew; `alg: none` and every algorithm but HS256 are refused.

use std::time::Duration;

use convene_core::access::MediaRights;
use convene_core::apikey::ApiSecret;
use convene_core::ids::{Identity, InstanceId, MeetingId};
use convene_core::meeting::Meeting;
use convene_core::participant::{Participant, Role};
use convene_core::time::Timestamp;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use livekit_api::access_token::Claims as LiveKitClaims;
pub use livekit_api::access_token::VideoGrants;
use serde::{Deserialize, Serialize};

/// Clock skew accepted on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// Default lifetime of a media access token.
pub const ACCESS_TTL: Duration = Duration::from_secs(6 * 3600);
/// Lifetime of a webhook signature (LiveKit's own is five minutes).
pub const WEBHOOK_TTL: Duration = Duration::from_secs(5 * 60);
/// Lifetime of a waiting-room token.
pub const WAITING_TTL: Duration = Duration::from_secs(2 * 3600);

/// Why a token was refused. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown or revoked API key")]
    UnknownKey,
    #[error("bad signature or algorithm (only HS256 is accepted)")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong kind of token for this call")]
    WrongKind,
    #[error("the token does not grant this")]
    MissingGrant,
    #[error("could not sign the token")]
    Signing,
}

/// The kind of a convene token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Media access: joins the room with the role's grants; also reads the meeting's events.
    Access,
    /// Waiting room: reads the person's own waiting-room state and nothing else.
    Waiting,
    /// A signed-in user (email one-time-code login), not bound to a meeting.
    Session,
    /// A one-time join link credential (BigBlueButton surface).
    JoinLink,
    /// An admin credential for convene's API, minted only for an API key holder
    /// (`convene api-key token`); bound to no meeting and carrying no media grant.
    Admin,
    /// The signature of a webhook convene sends (LiveKit's webhook format): proves a body came
    /// from convene, and is nothing else anywhere, LiveKit's own webhook endpoint included.
    Webhook,
}

/// convene's own claim, beside LiveKit's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConveneClaim {
    pub kind: TokenKind,
    /// Meeting id (empty for sessions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub meeting: String,
    /// The meeting run the token belongs to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// The person's epoch when issued (remove, deny and ban bump it).
    #[serde(default)]
    pub epoch: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Authorises the meeting's events channel.
    #[serde(default)]
    pub events: bool,
    /// Free use per kind (e.g. the one-time id of a join link).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nonce: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AllClaims {
    #[serde(flatten)]
    livekit: LiveKitClaims,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    convene: Option<ConveneClaim>,
}

/// Signs tokens with one API key pair.
#[derive(Clone, Debug)]
pub struct Signer {
    key_id: String,
    secret: ApiSecret,
}

/// A verified participant token, bound to a meeting run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantToken {
    pub kind: TokenKind,
    pub meeting: MeetingId,
    pub instance: InstanceId,
    pub identity: Identity,
    pub epoch: u32,
    pub role: Option<Role>,
    pub room: String,
    pub expires_at: Timestamp,
}

/// A verified session token (signed-in user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionToken {
    pub user: String,
    pub name: String,
    pub nonce: String,
    pub expires_at: Timestamp,
}

/// The grants a role carries in a media access token: the core's [`MediaRights`] of the role.
pub fn grants_for(role: Role, room: &str) -> VideoGrants {
    let rights = MediaRights::of(role);
    VideoGrants {
        room_join: true,
        room: room.to_owned(),
        room_admin: rights.room_admin,
        can_publish: Some(rights.publish),
        can_subscribe: Some(rights.subscribe),
        can_publish_data: Some(rights.publish_data),
        ..VideoGrants::default()
    }
}

impl Signer {
    pub fn new(key_id: impl Into<String>, secret: ApiSecret) -> Self {
        Self {
            key_id: key_id.into(),
            secret,
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn secret(&self) -> &ApiSecret {
        &self.secret
    }

    fn sign(&self, claims: &AllClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(self.secret.expose().as_bytes()),
        )
        .map_err(|_| TokenError::Signing)
    }

    fn base(&self, subject: &str, name: &str, now: Timestamp, ttl: Duration) -> LiveKitClaims {
        LiveKitClaims {
            iss: self.key_id.clone(),
            sub: subject.to_owned(),
            name: name.to_owned(),
            nbf: now.as_secs().max(0) as usize,
            exp: now.plus(ttl).as_secs().max(0) as usize,
            ..LiveKitClaims::default()
        }
    }

    /// A media access token for an admitted participant: grants follow the role, the room is the
    /// meeting's room, and the convene claim binds it to the run and the person's epoch.
    pub fn access_token(
        &self,
        meeting: &Meeting,
        participant: &Participant,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let livekit = self.media_claims(meeting, participant, now, ttl);
        self.sign(&AllClaims {
            livekit,
            convene: Some(participant_claim(TokenKind::Access, meeting, participant)),
        })
    }

    /// A plain LiveKit access token (no `convene` claim) for an external LiveKit server, which
    /// cannot ask convene before a join: the caller mints it only for an admitted person of a live
    /// meeting, with a short `ttl`; grants follow the role as in [`Signer::access_token`].
    pub fn livekit_access_token(
        &self,
        meeting: &Meeting,
        participant: &Participant,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let livekit = self.media_claims(meeting, participant, now, ttl);
        self.sign(&AllClaims {
            livekit,
            convene: None,
        })
    }

    /// The LiveKit claims of a media token: the person, grants by role, the meeting's room.
    fn media_claims(
        &self,
        meeting: &Meeting,
        participant: &Participant,
        now: Timestamp,
        ttl: Duration,
    ) -> LiveKitClaims {
        let mut livekit = self.base(
            participant.identity.as_str(),
            participant.name.as_str(),
            now,
            ttl,
        );
        livekit.video = grants_for(participant.role, meeting.room_name.as_str());
        livekit.metadata =
            serde_json::json!({ "role": participant.role, "meeting_id": meeting.id }).to_string();
        livekit
    }

    /// A waiting-room token: no media grant; it reads the person's own waiting-room state.
    pub fn waiting_token(
        &self,
        meeting: &Meeting,
        participant: &Participant,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let mut livekit = self.base(
            participant.identity.as_str(),
            participant.name.as_str(),
            now,
            ttl,
        );
        livekit.video = VideoGrants {
            room: meeting.room_name.to_string(),
            ..VideoGrants::default()
        };
        self.sign(&AllClaims {
            livekit,
            convene: Some(participant_claim(TokenKind::Waiting, meeting, participant)),
        })
    }

    /// A session token for a signed-in user (no media grant, no meeting).
    pub fn session_token(
        &self,
        user: &str,
        name: &str,
        nonce: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let convene = ConveneClaim {
            nonce: nonce.to_owned(),
            ..bare_claim(TokenKind::Session)
        };
        self.sign(&AllClaims {
            livekit: self.base(user, name, now, ttl),
            convene: Some(convene),
        })
    }

    /// A one-time join-link credential for a person placed in a meeting run.
    pub fn join_link_token(
        &self,
        meeting: &Meeting,
        participant: &Participant,
        nonce: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let livekit = self.base(
            participant.identity.as_str(),
            participant.name.as_str(),
            now,
            ttl,
        );
        let mut convene = participant_claim(TokenKind::JoinLink, meeting, participant);
        convene.events = false;
        convene.nonce = nonce.to_owned();
        self.sign(&AllClaims {
            livekit,
            convene: Some(convene),
        })
    }

    /// The `Authorization` value of a webhook POST, as LiveKit signs its own: no grant, valid for
    /// [`WEBHOOK_TTL`], claim `sha256` = base64 of the SHA-256 of the exact body bytes. LiveKit's
    /// `WebhookReceiver`s (every server SDK has one) verify it with the same key pair.
    pub fn webhook_token(&self, body: &[u8], now: Timestamp) -> Result<String, TokenError> {
        use base64::Engine as _;
        use sha2::Digest as _;
        let mut livekit = self.base("", "", now, WEBHOOK_TTL);
        livekit.sha256 =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body));
        self.sign(&AllClaims {
            livekit,
            convene: Some(bare_claim(TokenKind::Webhook)),
        })
    }

    /// A LiveKit server-API token as LiveKit's server SDKs mint it (for tests and tools): the
    /// given grants and no `convene` claim.
    pub fn livekit_server_token(
        &self,
        grants: VideoGrants,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let mut livekit = self.base("", "", now, ttl);
        livekit.video = grants;
        self.sign(&AllClaims {
            livekit,
            convene: None,
        })
    }

    /// An admin token for convene's API: its `convene` claim says `admin`; no media grant, no
    /// meeting. Only an API key holder gets one (`convene api-key token`).
    pub fn admin_token(&self, now: Timestamp, ttl: Duration) -> Result<String, TokenError> {
        self.sign(&AllClaims {
            livekit: self.base("", "", now, ttl),
            convene: Some(bare_claim(TokenKind::Admin)),
        })
    }
}

/// A claim of `kind` bound to no meeting or person.
fn bare_claim(kind: TokenKind) -> ConveneClaim {
    ConveneClaim {
        kind,
        meeting: String::new(),
        instance: String::new(),
        epoch: 0,
        role: None,
        events: false,
        nonce: String::new(),
    }
}

fn participant_claim(
    kind: TokenKind,
    meeting: &Meeting,
    participant: &Participant,
) -> ConveneClaim {
    ConveneClaim {
        kind,
        meeting: meeting.id.to_string(),
        instance: meeting.run.instance_id.to_string(),
        epoch: participant.epoch,
        role: Some(participant.role),
        events: true,
        nonce: String::new(),
    }
}

/// The `iss` (API key id) of a token, read without verifying, to find the key to verify with.
pub fn issuer(token: &str) -> Result<String, TokenError> {
    if token.len() > 8192 {
        return Err(TokenError::Malformed);
    }
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        .map_err(|_| TokenError::Malformed)?;
    claims
        .claims
        .get("iss")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or(TokenError::Malformed)
}

/// Whether a token carries a `convene` claim, read without verifying: a token convene minted for
/// itself, which is never what another system (LiveKit's webhooks) signed.
pub fn has_convene_claim(token: &str) -> bool {
    jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
        .is_ok_and(|data| data.claims.get("convene").is_some())
}

fn verify_all(token: &str, secret: &ApiSecret, now: Timestamp) -> Result<AllClaims, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    // Time is checked below against the `now` we are given, so tests are deterministic.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = ["exp".to_owned(), "iss".to_owned()].into_iter().collect();
    let data = jsonwebtoken::decode::<AllClaims>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature
        | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
        | jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => TokenError::BadSignature,
        _ => TokenError::Malformed,
    })?;
    let claims = data.claims;
    let leeway = LEEWAY.as_secs() as i64;
    let now_secs = now.as_secs();
    if claims.livekit.exp == 0 {
        return Err(TokenError::Malformed);
    }
    if (claims.livekit.exp as i64) + leeway < now_secs {
        return Err(TokenError::Expired);
    }
    if (claims.livekit.nbf as i64) - leeway > now_secs {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// Verifies a participant token of the expected kind (one of `accepted`), signed with `secret`.
pub fn verify_participant(
    token: &str,
    secret: &ApiSecret,
    now: Timestamp,
    accepted: &[TokenKind],
) -> Result<ParticipantToken, TokenError> {
    verify_participant_claims(verify_all(token, secret, now)?, accepted)
}

/// Verifies a session token.
pub fn verify_session(
    token: &str,
    secret: &ApiSecret,
    now: Timestamp,
) -> Result<SessionToken, TokenError> {
    let claims = verify_all(token, secret, now)?;
    let convene = claims.convene.ok_or(TokenError::WrongKind)?;
    if convene.kind != TokenKind::Session || claims.livekit.sub.is_empty() {
        return Err(TokenError::WrongKind);
    }
    Ok(SessionToken {
        user: claims.livekit.sub,
        name: claims.livekit.name,
        nonce: convene.nonce,
        expires_at: Timestamp::from_millis(claims.livekit.exp as i64 * 1000),
    })
}

/// Every grant of LiveKit's server API: what a convene admin token stands for where LiveKit's
/// grants are checked (RoomService).
fn all_server_grants() -> VideoGrants {
    VideoGrants {
        room_create: true,
        room_list: true,
        room_admin: true,
        room_record: true,
        ..VideoGrants::default()
    }
}

/// Verifies an admin credential for convene's own API. Two kinds say they are one:
///
/// - a token whose `convene` claim says `admin` ([`Signer::admin_token`]);
/// - a LiveKit server-API token as LiveKit's server SDKs mint it: no `convene` claim, `roomCreate`
///   or `roomList`, and no `roomJoin`.
///
/// Every other kind is refused with `WrongKind`: convene's participant tokens, and any media token
/// (`roomJoin`), whatever else it grants: a host's media token carries `roomAdmin` for its room,
/// and with an external LiveKit it is a plain LiveKit token signed with the same key. A room-scoped
/// `roomAdmin` server token is no admin of convene either (`MissingGrant`).
pub fn verify_admin(
    token: &str,
    secret: &ApiSecret,
    now: Timestamp,
) -> Result<VideoGrants, TokenError> {
    let claims = verify_all(token, secret, now)?;
    if let Some(convene) = claims.convene {
        return match convene.kind {
            TokenKind::Admin => Ok(all_server_grants()),
            _ => Err(TokenError::WrongKind),
        };
    }
    let video = claims.livekit.video;
    if video.room_join {
        return Err(TokenError::WrongKind);
    }
    if !(video.room_create || video.room_list) {
        return Err(TokenError::MissingGrant);
    }
    Ok(video)
}

/// Verifies a token for LiveKit's server API (RoomService) and returns the grants to check each
/// method against, as LiveKit does: a convene admin token stands for every grant; a plain LiveKit
/// token brings its own, and needs at least one of `roomCreate`, `roomList`, `roomAdmin`. convene's
/// participant, session and join-link tokens are refused (`WrongKind`).
pub fn verify_room_service(
    token: &str,
    secret: &ApiSecret,
    now: Timestamp,
) -> Result<VideoGrants, TokenError> {
    let claims = verify_all(token, secret, now)?;
    if let Some(convene) = claims.convene {
        return match convene.kind {
            TokenKind::Admin => Ok(all_server_grants()),
            _ => Err(TokenError::WrongKind),
        };
    }
    let video = claims.livekit.video;
    if !(video.room_create || video.room_list || video.room_admin) {
        return Err(TokenError::MissingGrant);
    }
    Ok(video)
}

/// A plain LiveKit access token, as an app holding an API secret mints it with LiveKit's SDKs.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveKitToken {
    pub identity: String,
    pub name: String,
    pub metadata: String,
    pub video: VideoGrants,
}

/// Verifies a plain LiveKit access token: no `convene` claim (convene's own tokens are checked
/// by [`verify_participant`]), `roomJoin` for a named room, and an identity.
pub fn verify_livekit(
    token: &str,
    secret: &ApiSecret,
    now: Timestamp,
) -> Result<LiveKitToken, TokenError> {
    let claims = verify_all(token, secret, now)?;
    if claims.convene.is_some() {
        return Err(TokenError::WrongKind);
    }
    let video = claims.livekit.video;
    if !video.room_join || video.room.is_empty() || claims.livekit.sub.is_empty() {
        return Err(TokenError::MissingGrant);
    }
    Ok(LiveKitToken {
        identity: claims.livekit.sub,
        name: claims.livekit.name,
        metadata: claims.livekit.metadata,
        video,
    })
}

/// Verifies a join-link token and returns its claims and nonce.
pub fn verify_join_link(
    token: &str,
    secret: &ApiSecret,
    now: Timestamp,
) -> Result<(ParticipantToken, String), TokenError> {
    let claims = verify_all(token, secret, now)?;
    let nonce = claims
        .convene
        .as_ref()
        .map(|c| c.nonce.clone())
        .unwrap_or_default();
    let token = verify_participant_claims(claims, &[TokenKind::JoinLink])?;
    Ok((token, nonce))
}

fn verify_participant_claims(
    claims: AllClaims,
    accepted: &[TokenKind],
) -> Result<ParticipantToken, TokenError> {
    let convene = claims.convene.ok_or(TokenError::WrongKind)?;
    if !accepted.contains(&convene.kind) {
        return Err(TokenError::WrongKind);
    }
    if convene.instance.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(ParticipantToken {
        kind: convene.kind,
        meeting: MeetingId::parse(&convene.meeting).map_err(|_| TokenError::Malformed)?,
        instance: InstanceId::from_stored(convene.instance),
        identity: Identity::parse(&claims.livekit.sub).map_err(|_| TokenError::Malformed)?,
        epoch: convene.epoch,
        role: convene.role,
        room: claims.livekit.video.room,
        expires_at: Timestamp::from_millis(claims.livekit.exp as i64 * 1000),
    })
}

#[cfg(test)]
mod tests;
