//! Token tests: kinds, binding, algorithm and expiry rules, and LiveKit's own verifier.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use convene_core::ids::{Credential, DisplayName, Identity, MeetingIdDigits};
use convene_core::meeting::{
    Credentials, MeetingSettings, Metadata, Mode, QualityPreset, WaitingPolicy,
};
use convene_core::ops::{self, Entry, Tx};
use rand::SeedableRng;
use rand::rngs::StdRng;

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

fn secret() -> ApiSecret {
    ApiSecret::parse("a-test-secret-that-is-long-enough-0123456789").unwrap()
}

fn signer() -> Signer {
    Signer::new("APItestkey", secret())
}

fn fixture(role: Role) -> (Meeting, Participant) {
    let mut rng = StdRng::seed_from_u64(11);
    let settings = MeetingSettings {
        name: DisplayName::parse("standup").unwrap(),
        mode: Mode::Meeting,
        policy: WaitingPolicy::Open,
        capacity: None,
        quality: QualityPreset::Default,
        logout_url: None,
        metadata: Metadata::default(),
        schedule: None,
        webhook_url: None,
        waiting_room_chat: false,
        auto_record: false,
    };
    let credentials = Credentials::new(
        Some(Credential::parse("hostpin1").unwrap()),
        None,
        None,
        &mut rng,
    )
    .unwrap();
    let id = MeetingId::generate(MeetingIdDigits::DEFAULT, &mut rng);
    let change = ops::create_meeting(id, None, settings, credentials, T0, &mut rng);
    let mut tx = Tx::new(change.meeting, T0);
    let entry = Entry {
        identity: Identity::parse("alice").unwrap(),
        name: DisplayName::parse("Alice").unwrap(),
        role,
        trusted: true,
    };
    let participant = ops::enter(&mut tx, None, entry).unwrap();
    (tx.meeting().clone(), participant)
}

#[test]
fn access_tokens_carry_role_grants_and_bind_to_the_run() {
    let (meeting, alice) = fixture(Role::Viewer);
    let token = signer()
        .access_token(&meeting, &alice, T0, ACCESS_TTL)
        .unwrap();
    let verified = verify_participant(&token, &secret(), T0, &[TokenKind::Access]).unwrap();
    assert_eq!(verified.meeting, meeting.id);
    assert_eq!(verified.instance, meeting.run.instance_id);
    assert_eq!(verified.identity.as_str(), "alice");
    assert_eq!(verified.role, Some(Role::Viewer));
    assert_eq!(verified.room, meeting.room_name.as_str());

    // LiveKit's own verifier reads the same token.
    let claims =
        livekit_api::access_token::TokenVerifier::with_api_key("APItestkey", secret().expose())
            .verify(
                &signer()
                    .access_token(
                        &meeting,
                        &alice,
                        Timestamp::from_millis(now_millis()),
                        ACCESS_TTL,
                    )
                    .unwrap(),
            )
            .unwrap();
    assert_eq!(claims.sub, "alice");
    assert!(claims.video.room_join);
    assert!(!claims.video.can_publish());
    assert!(claims.video.can_subscribe());
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn grants_follow_roles() {
    let host = grants_for(Role::Host, "r");
    assert!(
        host.room_admin && host.can_publish() && host.can_subscribe() && host.can_publish_data()
    );
    let speaker = grants_for(Role::Speaker, "r");
    assert!(!speaker.room_admin && speaker.can_publish() && speaker.can_publish_data());
    let viewer = grants_for(Role::Viewer, "r");
    assert!(!viewer.can_publish() && viewer.can_subscribe() && !viewer.can_publish_data());
}

#[test]
fn grants_are_the_cores_media_rights_for_every_role() {
    for role in [Role::Host, Role::Speaker, Role::Viewer] {
        let grants = grants_for(role, "r");
        let rights = MediaRights::of(role);
        assert_eq!(
            (
                grants.can_publish(),
                grants.can_subscribe(),
                grants.can_publish_data(),
                grants.room_admin
            ),
            (
                rights.publish,
                rights.subscribe,
                rights.publish_data,
                rights.room_admin
            ),
            "{role:?}"
        );
        assert!(grants.room_join && grants.room == "r");
    }
}

#[test]
fn kinds_are_not_interchangeable() {
    let (meeting, alice) = fixture(Role::Speaker);
    let waiting = signer()
        .waiting_token(&meeting, &alice, T0, WAITING_TTL)
        .unwrap();
    assert_eq!(
        verify_participant(&waiting, &secret(), T0, &[TokenKind::Access]),
        Err(TokenError::WrongKind)
    );
    assert!(
        verify_participant(
            &waiting,
            &secret(),
            T0,
            &[TokenKind::Waiting, TokenKind::Access]
        )
        .is_ok()
    );
    assert_eq!(
        verify_admin(&waiting, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    let access = signer()
        .access_token(&meeting, &alice, T0, ACCESS_TTL)
        .unwrap();
    assert_eq!(
        verify_admin(&access, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    assert_eq!(
        verify_session(&access, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    let session = signer()
        .session_token("u@example.com", "U", "n1", T0, WAITING_TTL)
        .unwrap();
    assert_eq!(
        verify_participant(&session, &secret(), T0, &[TokenKind::Access]),
        Err(TokenError::WrongKind)
    );
    assert_eq!(
        verify_session(&session, &secret(), T0).unwrap().user,
        "u@example.com"
    );
}

/// A plain LiveKit token with these grants, as LiveKit's server SDKs mint it.
fn livekit_with(grants: VideoGrants) -> String {
    signer()
        .livekit_server_token(grants, T0, ACCESS_TTL)
        .unwrap()
}

#[test]
fn admin_credentials_say_so_and_no_media_token_is_one() {
    // convene's own admin token, and a LiveKit server-API token (roomCreate or roomList).
    let admin = signer().admin_token(T0, ACCESS_TTL).unwrap();
    assert!(verify_admin(&admin, &secret(), T0).is_ok());
    for grants in [
        VideoGrants {
            room_create: true,
            ..Default::default()
        },
        VideoGrants {
            room_list: true,
            ..Default::default()
        },
    ] {
        assert!(verify_admin(&livekit_with(grants), &secret(), T0).is_ok());
    }
    // A media token is never an admin credential, whatever it also grants: the host's (roomAdmin),
    // in both of its forms (convene's access token; the plain token for an external LiveKit).
    let (meeting, host) = fixture(Role::Host);
    let convene_host = signer()
        .access_token(&meeting, &host, T0, ACCESS_TTL)
        .unwrap();
    let plain_host = signer()
        .livekit_access_token(&meeting, &host, T0, ACCESS_TTL)
        .unwrap();
    for media in [&convene_host, &plain_host] {
        assert_eq!(
            verify_admin(media, &secret(), T0),
            Err(TokenError::WrongKind)
        );
    }
    let join_and_create = livekit_with(VideoGrants {
        room_join: true,
        room_create: true,
        room: "x".into(),
        ..Default::default()
    });
    assert_eq!(
        verify_admin(&join_and_create, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    // A room-scoped admin token (what a server SDK mints to moderate one room) administers only
    // that room's RoomService, not convene.
    let room_admin = livekit_with(VideoGrants {
        room_admin: true,
        room: "x".into(),
        ..Default::default()
    });
    assert_eq!(
        verify_admin(&room_admin, &secret(), T0),
        Err(TokenError::MissingGrant)
    );
    assert!(verify_room_service(&room_admin, &secret(), T0).is_ok());
    // A webhook signature says it is one, and is nothing else.
    let webhook = signer().webhook_token(b"{}", T0).unwrap();
    assert!(has_convene_claim(&webhook));
    assert_eq!(
        verify_admin(&webhook, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    assert_eq!(
        verify_room_service(&webhook, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    assert_eq!(
        verify_livekit(&webhook, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    // convene's admin token is no participant, session or media token.
    assert_eq!(
        verify_participant(
            &admin,
            &secret(),
            T0,
            &[TokenKind::Access, TokenKind::Waiting, TokenKind::JoinLink]
        ),
        Err(TokenError::WrongKind)
    );
    assert_eq!(
        verify_session(&admin, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    assert_eq!(
        verify_livekit(&admin, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    // RoomService takes the admin token with every server grant, and no participant kind.
    let grants = verify_room_service(&admin, &secret(), T0).unwrap();
    assert!(grants.room_create && grants.room_list && grants.room_admin && !grants.room_join);
    assert_eq!(
        verify_room_service(&convene_host, &secret(), T0),
        Err(TokenError::WrongKind)
    );
}

#[test]
fn expiry_is_checked_with_a_small_leeway() {
    let (meeting, alice) = fixture(Role::Host);
    let token = signer()
        .access_token(&meeting, &alice, T0, Duration::from_secs(60))
        .unwrap();
    let at = |secs: u64| T0.plus(Duration::from_secs(secs));
    assert!(verify_participant(&token, &secret(), at(60 + 29), &[TokenKind::Access]).is_ok());
    assert_eq!(
        verify_participant(&token, &secret(), at(60 + 31), &[TokenKind::Access]),
        Err(TokenError::Expired)
    );
}

fn forge(header: serde_json::Value, payload: serde_json::Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        signature
    )
}

#[test]
fn alg_none_other_algorithms_and_bad_signatures_are_refused() {
    let (meeting, alice) = fixture(Role::Host);
    let good = signer()
        .access_token(&meeting, &alice, T0, ACCESS_TTL)
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(good.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let none = forge(
        serde_json::json!({"alg": "none", "typ": "JWT"}),
        payload.clone(),
        "",
    );
    assert!(verify_participant(&none, &secret(), T0, &[TokenKind::Access]).is_err());
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &payload,
        &EncodingKey::from_secret(secret().expose().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verify_participant(&hs384, &secret(), T0, &[TokenKind::Access]),
        Err(TokenError::BadSignature)
    );
    let other_secret = ApiSecret::parse("another-secret-that-is-long-enough-000000").unwrap();
    assert_eq!(
        verify_participant(&good, &other_secret, T0, &[TokenKind::Access]),
        Err(TokenError::BadSignature)
    );
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[2] = "";
    assert!(verify_participant(&parts.join("."), &secret(), T0, &[TokenKind::Access]).is_err());
    assert_eq!(
        verify_participant("not-a-jwt", &secret(), T0, &[TokenKind::Access]),
        Err(TokenError::Malformed)
    );
}

#[test]
fn tokens_without_exp_are_refused() {
    let payload =
        serde_json::json!({"iss": "APItestkey", "sub": "alice", "video": {"roomCreate": true}});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &payload,
        &EncodingKey::from_secret(secret().expose().as_bytes()),
    )
    .unwrap();
    assert!(verify_admin(&token, &secret(), T0).is_err());
}

#[test]
fn issuer_is_read_before_verifying() {
    let (meeting, alice) = fixture(Role::Host);
    let token = signer()
        .access_token(&meeting, &alice, T0, ACCESS_TTL)
        .unwrap();
    assert_eq!(issuer(&token).unwrap(), "APItestkey");
    assert_eq!(issuer("x.y.z"), Err(TokenError::Malformed));
}

#[test]
fn plain_livekit_tokens_are_their_own_kind() {
    let (meeting, alice) = fixture(Role::Speaker);
    let convene_token = signer()
        .access_token(&meeting, &alice, T0, ACCESS_TTL)
        .unwrap();
    assert_eq!(
        verify_livekit(&convene_token, &secret(), T0),
        Err(TokenError::WrongKind)
    );
    let app_token =
        livekit_api::access_token::AccessToken::with_api_key("APItestkey", secret().expose())
            .with_identity("bob")
            .with_grants(VideoGrants {
                room_join: true,
                room: "lobby".into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap();
    let verified =
        verify_livekit(&app_token, &secret(), Timestamp::from_millis(now_millis())).unwrap();
    assert_eq!(
        (verified.identity.as_str(), verified.video.room.as_str()),
        ("bob", "lobby")
    );
    let admin = livekit_with(VideoGrants {
        room_list: true,
        ..Default::default()
    });
    assert_eq!(
        verify_livekit(&admin, &secret(), T0),
        Err(TokenError::MissingGrant)
    );
}

#[test]
fn tokens_for_an_external_livekit_are_plain_livekit_tokens_with_the_roles_grants() {
    let (meeting, alice) = fixture(Role::Viewer);
    let lk = Signer::new("lkkey", secret());
    let now = Timestamp::from_millis(now_millis());
    let token = lk
        .livekit_access_token(&meeting, &alice, now, std::time::Duration::from_secs(600))
        .unwrap();
    // LiveKit's verifier accepts it; it carries no convene claim, so it is no convene token.
    let claims = livekit_api::access_token::TokenVerifier::with_api_key("lkkey", secret().expose())
        .verify(&token)
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.iss.as_str()),
        ("alice", "lkkey")
    );
    assert!(claims.video.room_join && !claims.video.can_publish() && claims.video.can_subscribe());
    assert_eq!(claims.video.room, meeting.room_name.as_str());
    assert_eq!(claims.exp as i64 - now.as_secs(), 600);
    assert_eq!(
        verify_participant(&token, &secret(), now, &[TokenKind::Access]),
        Err(TokenError::WrongKind)
    );
    assert_eq!(
        verify_livekit(&token, &secret(), now).unwrap().identity,
        "alice"
    );
}
