//! Who is calling: an admin (API key as Basic auth, or an admin JWT: convene's own admin token,
//! or a LiveKit server-API token with `roomCreate` / `roomList`), or a participant (its own convene
//! token). No media token is ever an admin: the kind is read from what the token says
//! (`convene_token::verify_admin`). Extractors turn headers into these, or a 401.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use convene_core::ErrorCode;
use convene_core::apikey::ApiKey;
use convene_core::ids::MeetingId;
use convene_core::service::{Caller, Meetings, ServiceError};
use convene_token::{ParticipantToken, TokenKind};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub enum Principal {
    Admin { key_id: String },
    Participant(ParticipantToken),
}

impl Principal {
    /// The caller as the core sees it, checked against the meeting in the path.
    pub fn caller_for(&self, meeting: &MeetingId) -> ApiResult<Caller> {
        match self {
            Self::Admin { .. } => Ok(Caller::Admin),
            Self::Participant(token) => {
                if &token.meeting != meeting {
                    return Err(ApiError::new(
                        ErrorCode::InvalidToken,
                        "the token is for another meeting",
                    ));
                }
                Ok(Caller::Participant {
                    identity: token.identity.clone(),
                    instance: token.instance.clone(),
                    epoch: token.epoch,
                })
            }
        }
    }
}

async fn active_key(state: &AppState, key_id: &str) -> ApiResult<ApiKey> {
    match state.meetings.keys().get(key_id).await? {
        Some(key) if key.is_active() => Ok(key),
        _ => Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "unknown or revoked API key",
        )),
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

/// Authenticates an `Authorization` header value (`Basic` or `Bearer`), accepting participant
/// tokens of the given kinds.
pub async fn authenticate(
    state: &AppState,
    authorization: &str,
    kinds: &[TokenKind],
) -> ApiResult<Principal> {
    let now = state.meetings.now();
    if let Some(encoded) = strip_scheme(authorization, "Basic") {
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| unauthenticated("malformed Basic credentials"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| unauthenticated("malformed Basic credentials"))?;
        let (key_id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("Basic credentials must be key:secret"))?;
        let key = active_key(state, key_id).await?;
        if !bool::from(key.secret.expose().as_bytes().ct_eq(secret.as_bytes())) {
            return Err(unauthenticated("wrong API secret"));
        }
        return Ok(Principal::Admin { key_id: key.id });
    }
    let token = bearer(authorization)
        .ok_or_else(|| unauthenticated("expected Authorization: Basic or Bearer"))?;
    authenticate_token(state, token, kinds, now).await
}

/// Authenticates a bare token (from a header or an `access_token` query parameter).
pub async fn authenticate_token(
    state: &AppState,
    token: &str,
    kinds: &[TokenKind],
    now: convene_core::Timestamp,
) -> ApiResult<Principal> {
    verify_with_stored_key(&state.meetings, token, |key| {
        match convene_token::verify_admin(token, &key.secret, now) {
            Ok(_) => return Ok(Principal::Admin { key_id: key.id }),
            Err(convene_token::TokenError::WrongKind) => {}
            Err(e) => return Err(e),
        }
        convene_token::verify_participant(token, &key.secret, now, kinds)
            .map(Principal::Participant)
    })
    .await
    .map_err(|e| match e {
        StoredKeyError::Token(e) => e.into(),
        StoredKeyError::UnknownKey => ApiError::new(ErrorCode::InvalidToken, e.to_string()),
        StoredKeyError::Store(e) => e.into(),
    })
}

/// Why a token was not verified with the key it names.
#[derive(Debug, thiserror::Error)]
pub enum StoredKeyError {
    /// Malformed, or refused by the verification (expired, wrong signature, wrong kind...).
    #[error(transparent)]
    Token(#[from] convene_token::TokenError),
    /// The issuer names no key, or a revoked one.
    #[error("unknown or revoked API key")]
    UnknownKey,
    /// The store failed while reading the key.
    #[error(transparent)]
    Store(#[from] ServiceError),
}

/// Verifies a token with the stored key it names as its issuer (`iss`), which must be active:
/// `verify` is given that key and says which kind of token it accepts. Every surface that takes
/// a token signed with an API key (native API, compatibility sessions, RoomService, `/rtc`
/// admission) looks its key up here.
pub async fn verify_with_stored_key<T>(
    meetings: &Meetings,
    token: &str,
    verify: impl FnOnce(ApiKey) -> Result<T, convene_token::TokenError>,
) -> Result<T, StoredKeyError> {
    let issuer = convene_token::issuer(token)?;
    match meetings.keys().get(&issuer).await? {
        Some(key) if key.is_active() => Ok(verify(key)?),
        _ => Err(StoredKeyError::UnknownKey),
    }
}

/// The token of an `Authorization` header value with the `Bearer` scheme, trimmed; the scheme is
/// matched without regard to case (RFC 7235: `Bearer`, `bearer` and `BEARER` are one). `None`
/// for another scheme or a value without one. Every surface reads Bearer tokens here.
pub fn bearer(authorization: &str) -> Option<&str> {
    strip_scheme(authorization, "Bearer").map(str::trim)
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn authorization(parts: &Parts) -> ApiResult<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing Authorization header"))?
        .to_str()
        .map_err(|_| unauthenticated("malformed Authorization header"))
}

/// Authenticates from the `Authorization` header, or else from an `access_token` query parameter
/// (browsers cannot set headers on `EventSource` or `WebSocket`); the header wins when both are given.
pub async fn authenticate_request(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    access_token: Option<&str>,
    kinds: &[TokenKind],
) -> ApiResult<Principal> {
    match (headers.get(AUTHORIZATION), access_token) {
        (Some(value), _) => {
            let value = value
                .to_str()
                .map_err(|_| unauthenticated("malformed Authorization header"))?;
            authenticate(state, value, kinds).await
        }
        (None, Some(token)) => {
            authenticate_token(state, token.trim(), kinds, state.meetings.now()).await
        }
        (None, None) => Err(unauthenticated(
            "missing Authorization header or access_token parameter",
        )),
    }
}

/// An admin (API key holder).
pub struct Admin {
    pub key_id: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, authorization(parts)?, &[]).await {
            Ok(Principal::Admin { key_id }) => Ok(Self { key_id }),
            Ok(Principal::Participant(_))
            | Err(ApiError {
                code: ErrorCode::InvalidToken,
                ..
            }) => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "this call needs an API key",
            )),
            Err(e) => Err(e),
        }
    }
}

/// An admin, or a participant presenting an access or waiting-room token.
pub struct AnyCaller(pub Principal);

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(
            state,
            authorization(parts)?,
            &[TokenKind::Access, TokenKind::Waiting],
        )
        .await
        .map(Self)
    }
}

/// The client's address: the connection's, or, when that is a trusted reverse proxy, the one
/// the proxies recorded in `X-Forwarded-For` (see [`TrustedProxies`]). `0.0.0.0` when unknown
/// (in-process tests). Per-address limits and failure counters are keyed by its
/// [`ClientAddr::network`].
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// What one client is counted under: its IPv4 address, or its IPv6 /64 (the smallest network
    /// a subscriber is given, so a client cannot escape a limit by changing its address's host
    /// part). Connection caps, request-rate limits and failure counters all use it.
    pub fn network(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        }
    }

    /// The failure counters' key: the [`ClientAddr::network`], an IPv6 one written with `/64`.
    pub fn key(&self) -> String {
        match Self::network(self.0) {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("{v6}/64"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<crate::realtime::direct::Peer>>()
            .map(|ConnectInfo(peer)| peer.addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let ip = match parts.extensions.get::<TrustedProxies>() {
            Some(trusted) => trusted.client(peer, &parts.headers),
            None => peer.to_canonical(),
        };
        Ok(Self(ip))
    }
}

/// Reverse proxies (addresses or CIDR ranges, `CONVENE_TRUSTED_PROXIES`) whose
/// `X-Forwarded-For` is believed. The server puts it in every request's extensions.
///
/// Each proxy appends the address it received the request from, so only the right-hand part of
/// the header, written by the trusted chain, can be believed: the client is the right-most entry
/// that is not itself a trusted proxy. What a client writes into the header itself lies to the
/// left of that and is never used, so nobody picks their own rate-limit key; a request that did
/// not come from a trusted proxy is keyed by its connection's address whatever it sends.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let mut hops = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            match value.to_str() {
                Ok(text) => hops.extend(text.split(',').map(|hop| parse_hop(hop.trim()))),
                Err(_) => hops.push(None),
            }
        }
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                // Not an address: nothing left of it can be believed; keep the last hop that was.
                None => break,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an IP address, or an address with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_client_is_counted_by_its_ipv4_address_or_its_ipv6_64() {
        let a = ClientAddr(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientAddr(ip("2001:db8:1:2:bbbb::2"));
        let other = ClientAddr(ip("2001:db8:1:3::1"));
        assert_eq!(a.key(), "2001:db8:1:2::/64");
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), other.key());
        assert_eq!(ClientAddr(ip("192.0.2.7")).key(), "192.0.2.7");
        // An IPv4 client seen through an IPv6 socket is the IPv4 client.
        assert_eq!(ClientAddr(ip("::ffff:192.0.2.7")).key(), "192.0.2.7");
        assert_ne!(
            ClientAddr(ip("192.0.2.7")).key(),
            ClientAddr(ip("192.0.2.8")).key()
        );
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "bEaReR  tok "] {
            assert_eq!(bearer(value), Some("tok"), "{value}");
        }
        assert_eq!(bearer("Bearer "), Some(""));
        assert_eq!(bearer("Basic dG9r"), None);
        assert_eq!(bearer("Bearertok"), None);
        assert_eq!(bearer("tok"), None);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            trusted.client(ip("198.51.100.4"), &headers),
            ip("198.51.100.4")
        );
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1/32"]);
        // One proxy: it appended the client's address.
        let one = forwarded(&["203.0.113.9"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &one), ip("203.0.113.9"));
        // A client that forges the header only adds entries to the left of the real one.
        let forged = forwarded(&["1.1.1.1, 203.0.113.9"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &forged), ip("203.0.113.9"));
        // Two trusted proxies (CDN edge 10.1.2.3, then the local one); header split over lines.
        let chain = forwarded(&["6.6.6.6, 203.0.113.9", "10.1.2.3"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &chain), ip("203.0.113.9"));
        // Ports and IPv6 in brackets, as some proxies write them.
        let ported = forwarded(&["[2001:db8::7]:4711"]);
        assert_eq!(trusted.client(ip("10.9.9.9"), &ported), ip("2001:db8::7"));
        let v4_port = forwarded(&["203.0.113.10:5000"]);
        assert_eq!(trusted.client(ip("10.9.9.9"), &v4_port), ip("203.0.113.10"));
    }

    #[test]
    fn without_a_believable_hop_the_proxy_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &forwarded(&["unknown"])),
            ip("10.0.0.2")
        );
        // Garbage stops the walk: the trusted hop to its right is used, not anything further left.
        let garbage = forwarded(&["203.0.113.9, bogus, 10.0.0.5"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &garbage), ip("10.0.0.5"));
        // Only trusted hops: the left-most of them.
        let all = forwarded(&["10.0.0.7, 10.0.0.5"]);
        assert_eq!(trusted.client(ip("10.0.0.2"), &all), ip("10.0.0.7"));
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let trusted = proxies(&["127.0.0.1/32"]);
        let headers = forwarded(&["::ffff:203.0.113.9"]);
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &headers),
            ip("203.0.113.9")
        );
    }
}
