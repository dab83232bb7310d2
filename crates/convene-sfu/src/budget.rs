//! Budgets for what a client can send cheaply: signalling connects per identity and room, and
//! signalling requests per connection. Token buckets with time passed in (no clock, no locks),
//! so the rules are tested with made-up instants and the per-request check is a comparison and
//! an addition.
//!
//! A bucket is kept in its GCRA form, the instant at which it will be full again: taking a token
//! moves that instant one period later, and is refused when it would then lie more than a whole
//! burst ahead of now. Unlike a rate-limiter crate, a bucket can also be *looked at* without
//! taking anything, which `/rtc/validate` needs to say why `/rtc` refused a connect without
//! spending the budget itself.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A rate: up to `burst` at once, then one more every `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub period: Duration,
}

impl Rate {
    /// `burst` at once, then `per_second` a second.
    pub fn per_second(burst: u32, per_second: u32) -> Rate {
        Rate {
            burst,
            period: Duration::from_secs(1) / per_second.max(1),
        }
    }

    /// How long an empty bucket takes to fill.
    fn window(self) -> Duration {
        self.period * self.burst
    }
}

/// One token bucket, full when made.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    /// When the bucket will be full again (at or before now: it is full).
    full_at: Instant,
}

impl Bucket {
    pub fn full(now: Instant) -> Bucket {
        Bucket { full_at: now }
    }

    /// Takes one token, or says how long until there is one (nothing is taken then).
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let full_at = self.full_at.max(now) + rate.period;
        let limit = now + rate.window();
        if full_at > limit {
            return Err(full_at - limit);
        }
        self.full_at = full_at;
        Ok(())
    }

    /// What [`Bucket::take`] would answer, without taking.
    pub fn check(&self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut copy = *self;
        copy.take(rate, now)
    }

    /// Whole tokens left now.
    pub fn available(&self, rate: Rate, now: Instant) -> u32 {
        let owed = self.full_at.saturating_duration_since(now);
        let used = owed.as_nanos().div_ceil(rate.period.as_nanos().max(1));
        rate.burst
            .saturating_sub(u32::try_from(used).unwrap_or(u32::MAX))
    }

    fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }
}

/// Buckets by key (one per identity and room), each starting full. A full bucket is the same as
/// none, so full ones are dropped now and then: the map holds only keys that spent something
/// within the last refill window.
#[derive(Debug)]
pub struct Budgets<K> {
    rate: Rate,
    buckets: HashMap<K, Bucket>,
    /// Size at which full buckets are dropped next (twice what was left last time: amortised).
    prune_at: usize,
}

/// The least `prune_at`: below this many keys, nothing is scanned.
const PRUNE_FLOOR: usize = 64;

impl<K: Hash + Eq> Budgets<K> {
    pub fn new(rate: Rate) -> Self {
        Budgets {
            rate,
            buckets: HashMap::new(),
            prune_at: PRUNE_FLOOR,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one token from `key`'s bucket, or says how long until there is one.
    pub fn take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= self.prune_at {
            self.buckets.retain(|_, bucket| !bucket.is_full(now));
            self.prune_at = (self.buckets.len() * 2).max(PRUNE_FLOOR);
        }
        let rate = self.rate;
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(now))
            .take(rate, now)
    }

    /// What [`Budgets::take`] would answer for `key`, without taking.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        match self.buckets.get(key) {
            Some(bucket) => bucket.check(self.rate, now),
            None => Ok(()),
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOINS: Rate = Rate {
        burst: 10,
        period: Duration::from_secs(6),
    };

    #[test]
    fn a_bucket_gives_its_burst_then_one_per_period() {
        let t0 = Instant::now();
        let mut bucket = Bucket::full(t0);
        assert_eq!(bucket.available(JOINS, t0), 10);
        for _ in 0..10 {
            assert_eq!(bucket.take(JOINS, t0), Ok(()));
        }
        assert_eq!(bucket.available(JOINS, t0), 0);
        assert_eq!(bucket.take(JOINS, t0), Err(Duration::from_secs(6)));
        // A refusal takes nothing: the wait only shrinks with time.
        let later = t0 + Duration::from_secs(4);
        assert_eq!(bucket.take(JOINS, later), Err(Duration::from_secs(2)));
        let t6 = t0 + Duration::from_secs(6);
        assert_eq!(bucket.available(JOINS, t6), 1);
        assert_eq!(bucket.take(JOINS, t6), Ok(()));
        assert_eq!(bucket.take(JOINS, t6), Err(Duration::from_secs(6)));
        // Idle for a whole window: full again, never more than the burst.
        let idle = t6 + Duration::from_secs(600);
        assert_eq!(bucket.available(JOINS, idle), 10);
        for _ in 0..10 {
            assert_eq!(bucket.take(JOINS, idle), Ok(()));
        }
        assert!(bucket.take(JOINS, idle).is_err());
    }

    #[test]
    fn checking_takes_nothing() {
        let t0 = Instant::now();
        let mut bucket = Bucket::full(t0);
        for _ in 0..100 {
            assert_eq!(bucket.check(JOINS, t0), Ok(()));
        }
        for _ in 0..10 {
            bucket.take(JOINS, t0).unwrap();
        }
        assert_eq!(bucket.check(JOINS, t0), Err(Duration::from_secs(6)));
        assert_eq!(bucket.available(JOINS, t0), 0);
    }

    #[test]
    fn a_steady_rate_under_the_limit_is_never_refused() {
        let rate = Rate::per_second(200, 50);
        assert_eq!(rate.period, Duration::from_millis(20));
        let t0 = Instant::now();
        let mut bucket = Bucket::full(t0);
        // 40 a second for ten minutes, in bursts of 20 every half second.
        for tick in 0..1200u32 {
            let now = t0 + Duration::from_millis(500) * tick;
            for _ in 0..20 {
                assert_eq!(bucket.take(rate, now), Ok(()), "tick {tick}");
            }
        }
        // 100 a second for ten seconds: the burst and 50 a second get through, no more.
        let start = t0 + Duration::from_secs(700);
        let mut taken = 0;
        for i in 0..1000u32 {
            if bucket
                .take(rate, start + Duration::from_millis(10) * i)
                .is_ok()
            {
                taken += 1;
            }
        }
        assert!((200 + 490..=200 + 500).contains(&taken), "{taken}");
    }

    #[test]
    fn budgets_are_per_key_and_full_ones_are_dropped() {
        let t0 = Instant::now();
        let mut budgets = Budgets::new(JOINS);
        let ann = "ann".to_owned();
        for _ in 0..10 {
            budgets.take(ann.clone(), t0).unwrap();
        }
        assert_eq!(budgets.take(ann.clone(), t0), Err(Duration::from_secs(6)));
        assert_eq!(budgets.check(&ann, t0), Err(Duration::from_secs(6)));
        assert_eq!(budgets.check(&"bob".to_owned(), t0), Ok(()));
        assert_eq!(budgets.take("bob".to_owned(), t0), Ok(()));

        // Many keys that spent once: once their buckets are full again they are dropped as new
        // keys come in, so the map holds only what was spent within a refill window.
        for i in 0..1000 {
            budgets.take(format!("p{i}"), t0).unwrap();
        }
        assert!(budgets.len() >= 1000);
        let later = t0 + Duration::from_secs(6);
        for i in 0..1100 {
            budgets.take(format!("q{i}"), later).unwrap();
        }
        // ann (one token back of ten) and the q keys are kept; every full bucket is gone.
        assert_eq!(budgets.len(), 1 + 1100);
        assert_eq!(budgets.take(ann.clone(), later), Ok(()));
        assert_eq!(budgets.take(ann, later), Err(Duration::from_secs(6)));
    }
}
