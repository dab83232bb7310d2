//! The one-time-code rules with a fixed clock: expiry, single use, five tries, send caps, and
//! codes stored only as salted digests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::random::SeededEntropy;

use super::*;

const T0: i64 = 1_700_000_000_000;

struct FixedClock(AtomicI64);

impl FixedClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Default)]
struct RecordingMailer(Mutex<Vec<LoginCodeMail>>);

impl RecordingMailer {
    fn last_code(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .last()
            .expect("a mail was sent")
            .code
            .reveal()
            .to_owned()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send_login_code(&self, mail: &LoginCodeMail) -> Result<(), MailError> {
        self.0.lock().unwrap().push(mail.clone());
        Ok(())
    }
}

struct FailingMailer;

#[async_trait]
impl Mailer for FailingMailer {
    async fn send_login_code(&self, _mail: &LoginCodeMail) -> Result<(), MailError> {
        Err(MailError("connection refused".into()))
    }
}

struct Rig {
    logins: Logins,
    clock: Arc<FixedClock>,
    mailer: Arc<RecordingMailer>,
    store: Arc<MemoryLoginStore>,
}

fn rig() -> Rig {
    let clock = Arc::new(FixedClock(AtomicI64::new(T0)));
    let mailer = Arc::new(RecordingMailer::default());
    let store = Arc::new(MemoryLoginStore::default());
    let logins = Logins::new(
        store.clone(),
        clock.clone(),
        Arc::new(SeededEntropy::new(1)),
        mailer.clone(),
    );
    Rig {
        logins,
        clock,
        mailer,
        store,
    }
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}
fn name(s: &str) -> DisplayName {
    DisplayName::parse(s).unwrap()
}
fn wrong(code: &str) -> String {
    // Another 6-digit code.
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

#[test]
fn a_code_signs_in_once_and_creates_the_user_once() {
    block_on(async {
        let rig = rig();
        let ann = email("Ann@Example.com");
        rig.logins
            .send_code(&ann, &name("Ann"), "10.0.0.1")
            .await
            .unwrap();
        let code = rig.mailer.last_code();
        assert_eq!(code.len(), CODE_DIGITS);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let user = rig.logins.sign_in(&ann, &name("Ann"), &code).await.unwrap();
        assert_eq!(user.email.as_str(), "ann@example.com");
        assert_eq!(user.id.as_str().len(), UserId::DIGITS);

        let again = rig
            .logins
            .sign_in(&ann, &name("Ann"), &code)
            .await
            .unwrap_err();
        assert_eq!(again.code(), ErrorCode::InvalidCode);
        assert!(again.to_string().contains("used already"), "{again}");

        // A second sign-in is the same user, with the newest name.
        rig.logins
            .send_code(&ann, &name("Ann B."), "10.0.0.1")
            .await
            .unwrap();
        let second = rig
            .logins
            .sign_in(&ann, &name("Ann B."), &rig.mailer.last_code())
            .await
            .unwrap();
        assert_eq!(second.id, user.id);
        assert_eq!(
            rig.logins
                .user(&user.id)
                .await
                .unwrap()
                .unwrap()
                .name
                .as_str(),
            "Ann B."
        );
    });
}

#[test]
fn codes_expire_after_ten_minutes() {
    block_on(async {
        let rig = rig();
        let bob = email("bob@example.com");
        rig.logins.send_code(&bob, &name("Bob"), "c").await.unwrap();
        let code = rig.mailer.last_code();
        rig.clock.advance(CODE_TTL - Duration::from_millis(1));
        let record = rig.store.login_code(&bob).await.unwrap().unwrap();
        assert_eq!(
            record.check(&code, rig.clock.now()).1,
            Ok(()),
            "valid until the last millisecond"
        );
        rig.clock.advance(Duration::from_millis(1));
        let err = rig
            .logins
            .sign_in(&bob, &name("Bob"), &code)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidCode);
        assert!(err.to_string().contains("expired"), "{err}");
    });
}

#[test]
fn five_wrong_tries_void_the_code_even_for_the_right_one() {
    block_on(async {
        let rig = rig();
        let cy = email("cy@example.com");
        rig.logins.send_code(&cy, &name("Cy"), "c").await.unwrap();
        let code = rig.mailer.last_code();
        for try_number in 1..=MAX_TRIES {
            let err = rig
                .logins
                .sign_in(&cy, &name("Cy"), &wrong(&code))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidCode);
            let left = MAX_TRIES - try_number;
            if left > 0 {
                assert!(
                    err.to_string().contains(&format!("{left} tries left")),
                    "{err}"
                );
            } else {
                assert!(err.to_string().contains("last try"), "{err}");
            }
        }
        let err = rig
            .logins
            .sign_in(&cy, &name("Cy"), &code)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("too many wrong tries"), "{err}");
        // A fresh code works again.
        rig.logins.send_code(&cy, &name("Cy"), "c").await.unwrap();
        rig.logins
            .sign_in(&cy, &name("Cy"), &rig.mailer.last_code())
            .await
            .unwrap();
    });
}

#[test]
fn four_wrong_tries_then_the_right_code_still_works() {
    block_on(async {
        let rig = rig();
        let di = email("di@example.com");
        rig.logins.send_code(&di, &name("Di"), "c").await.unwrap();
        let code = rig.mailer.last_code();
        for _ in 1..MAX_TRIES {
            rig.logins
                .sign_in(&di, &name("Di"), &wrong(&code))
                .await
                .unwrap_err();
        }
        rig.logins.sign_in(&di, &name("Di"), &code).await.unwrap();
    });
}

#[test]
fn a_new_code_replaces_the_previous_one_and_unknown_addresses_have_none() {
    block_on(async {
        let rig = rig();
        let ed = email("ed@example.com");
        let err = rig
            .logins
            .sign_in(&ed, &name("Ed"), "123456")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no code was sent"), "{err}");
        rig.logins.send_code(&ed, &name("Ed"), "c").await.unwrap();
        let first = rig.mailer.last_code();
        rig.logins.send_code(&ed, &name("Ed"), "c").await.unwrap();
        let second = rig.mailer.last_code();
        if first != second {
            assert_eq!(
                rig.logins
                    .sign_in(&ed, &name("Ed"), &first)
                    .await
                    .unwrap_err()
                    .code(),
                ErrorCode::InvalidCode
            );
        }
        rig.logins.sign_in(&ed, &name("Ed"), &second).await.unwrap();
    });
}

#[test]
fn sends_are_capped_per_address_and_window() {
    block_on(async {
        let rig = rig();
        let fay = email("fay@example.com");
        for n in 0..ADDRESS_SEND_CAP.limit {
            rig.logins
                .send_code(&fay, &name("Fay"), &format!("client-{n}"))
                .await
                .unwrap();
        }
        let err = rig
            .logins
            .send_code(&fay, &name("Fay"), "client-x")
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::RateLimited);
        assert!(err.to_string().contains("to this address"), "{err}");
        assert_eq!(
            rig.mailer.count(),
            ADDRESS_SEND_CAP.limit as usize,
            "no mail over the cap"
        );
        // Other addresses are not affected; the window ends.
        rig.logins
            .send_code(&email("gus@example.com"), &name("Gus"), "client-y")
            .await
            .unwrap();
        rig.clock.advance(ADDRESS_SEND_CAP.window);
        rig.logins
            .send_code(&fay, &name("Fay"), "client-z")
            .await
            .unwrap();
    });
}

#[test]
fn sends_are_capped_per_client() {
    block_on(async {
        let rig = rig();
        for n in 0..CLIENT_SEND_CAP.limit {
            rig.logins
                .send_code(
                    &email(&format!("u{n}@example.com")),
                    &name("U"),
                    "198.51.100.7",
                )
                .await
                .unwrap();
        }
        let err = rig
            .logins
            .send_code(&email("late@example.com"), &name("Late"), "198.51.100.7")
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::RateLimited);
        assert!(err.to_string().contains("from this client"), "{err}");
        rig.logins
            .send_code(&email("late@example.com"), &name("Late"), "198.51.100.8")
            .await
            .unwrap();
        rig.clock.advance(CLIENT_SEND_CAP.window);
        rig.logins
            .send_code(&email("later@example.com"), &name("Later"), "198.51.100.7")
            .await
            .unwrap();
    });
}

#[test]
fn codes_are_stored_as_salted_digests_only() {
    let mut rng = StdRng::seed_from_u64(5);
    let code = LoginCode::generate(&mut rng);
    let ann = email("ann@example.com");
    let a = CodeRecord::issue(&ann, &code, Timestamp::from_millis(T0), &mut rng);
    let b = CodeRecord::issue(&ann, &code, Timestamp::from_millis(T0), &mut rng);
    // The record's only text fields are the address, the salt and the digest.
    assert_ne!(a.digest, code.reveal());
    assert_ne!(a.salt, code.reveal());
    assert_ne!(a.salt, b.salt);
    assert_ne!(
        a.digest, b.digest,
        "same code, different salt, different digest"
    );
    assert_eq!(a.salt.len(), 32);
    assert_eq!(a.digest.len(), 64);
    // The digest is bound to the address.
    let mut other = a.clone();
    other.email = email("eve@example.com");
    assert!(matches!(
        other.check(code.reveal(), Timestamp::from_millis(T0)).1,
        Err(CodeRefusal::Wrong { .. })
    ));
    assert_eq!(format!("{code:?}"), "LoginCode(<redacted>)");
}

#[test]
fn mail_failures_are_reported_as_such() {
    block_on(async {
        let clock = Arc::new(FixedClock(AtomicI64::new(T0)));
        let logins = Logins::new(
            Arc::new(MemoryLoginStore::default()),
            clock,
            Arc::new(SeededEntropy::new(1)),
            Arc::new(FailingMailer),
        );
        let err = logins
            .send_code(&email("a@example.com"), &name("A"), "c")
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::MailFailed);
    });
}

#[test]
fn emails_are_validated_and_normalised() {
    assert_eq!(
        email("  Ann.Lee+x@Mail.Example.ORG ").as_str(),
        "ann.lee+x@mail.example.org"
    );
    for bad in [
        "",
        "ann",
        "ann@",
        "@example.com",
        "ann@example",
        "a b@example.com",
        "ann@exa mple.com",
        "a@b@c.com",
        "ann@-x.com",
        "ann@x..com",
        "<a@b.com>",
    ] {
        assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
    }
    assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    assert!(UserId::parse("123456789012").is_ok());
    for bad in ["", "012345678901", "12345678901", "12345678901a"] {
        assert!(UserId::parse(bad).is_err(), "{bad:?}");
    }
}
