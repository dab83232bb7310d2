//! The guessing limits around every secret a caller presents (meeting credentials, deployment
//! secrets, meeting ids where the id is the secret), counted in the store, and their housekeeping.

use crate::error::{DomainError, ErrorCode};
use crate::lockout::FailureScope;
use crate::participant::Role;
use crate::time::Timestamp;

use super::{Meetings, Result};

/// What a presented secret turned out to be, for the guessing limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presented {
    Wrong,
    /// A right credential that is not the host's (or a deployment-wide secret).
    Credential,
    /// The meeting's host credential.
    Host,
}

impl Meetings {
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
    /// delay. Each success clears its own counter. The client address's counter (by default 30
    /// failures in 10 minutes) is checked first and counts every failure. The API key is never
    /// counted.
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
            .check(FailureScope::Address, now, &self.guess_limits)?;
        let host_key = format!("{key}#host");
        let shared = self
            .store
            .failures(FailureScope::Meeting, key)
            .await?
            .check(FailureScope::Meeting, now, &self.guess_limits);
        match (presented, shared) {
            (Presented::Host, _) => {
                self.store
                    .failures(FailureScope::Meeting, &host_key)
                    .await?
                    .check(FailureScope::Meeting, now, &self.guess_limits)?;
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
                    .check(FailureScope::Meeting, now, &self.guess_limits)?;
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
    /// the default 30 failures per address in 10 minutes, an address tries at most 4,320 ids a day.
    pub async fn check_id_lookup(&self, client: &str, found: bool) -> Result<()> {
        let now = self.now();
        self.store
            .failures(FailureScope::Address, client)
            .await?
            .check(FailureScope::Address, now, &self.guess_limits)?;
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
            .window(&self.guess_limits)
            .map(|w| Timestamp::from_millis(now.as_millis() - w.as_millis() as i64));
        self.store
            .record_failure(scope, subject, now, forget_before)
            .await?;
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
                .prune_failures(scope, scope.stale_before(now, &self.guess_limits))
                .await?;
        }
        Ok(pruned)
    }
}
