//! The fleet's provider rate limits as this worker takes them (docs/rate-limits.md).
//!
//! Every account with a limit has a token bucket per kind in the store, shared by every
//! worker. Units are taken in leased shares: the request that finds none in hand asks the store,
//! in one short write, for as many as are waiting here — or as recent shares needed, doubling
//! while shares are spent within their lease and halving when one is forfeited — at most
//! [`MAX_SHARE`] requests, never more than the bucket holds; the rest are handed out locally.
//! What is left of a request share when its lease ([`SHARE_LEASE`]) ends is forfeited — lost
//! capacity, never an overrun. A request is let through only while its share's lease runs, so
//! no unit is spent more than [`IN_HAND`] after it left the bucket; the bucket's capacity is
//! the limit's burst less what refills in that time, which keeps the whole fleet inside a
//! provider bucket of the limit's own shape (capacity: the per-minute figure; refill: a
//! sixtieth of it per second).
//!
//! Tokens are taken by estimate (the estimates of the requests waiting here, at least this
//! one's whole), and corrected by the reported usage afterwards: a debt is written at once (the
//! next requests wait it out); units to give back — and what is left of an expired token
//! share — ride on the next take. A claim skips an agent whose account's buckets are known to
//! be empty, from this worker's last take, without asking the store.

use crate::metrics;
use smith_core::RateLimit;
use smith_store::{RateKind, RateSpec, RateTake, Store};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most requests one share takes from the store.
pub const MAX_SHARE: u64 = 8;
/// How long a share's requests may be spent after it was taken.
pub const SHARE_LEASE: Duration = Duration::from_millis(750);
/// The longest a unit is in hand before its request reaches the provider: the share's lease
/// plus the time to send. The bucket's capacity leaves room for what refills meanwhile.
pub const IN_HAND: Duration = Duration::from_secs(1);
/// Waits between takes are at least this (a store round trip is not free) and at most
/// [`MAX_WAIT`] (a bucket refilled by another worker's correction is seen soon enough).
const MIN_WAIT: Duration = Duration::from_millis(5);
const MAX_WAIT: Duration = Duration::from_secs(2);
/// The wait after a failed take: the limit holds while the store is away.
const ERROR_WAIT: Duration = Duration::from_millis(250);

/// The bucket shapes of a set of per-account limits, as declared in the store.
pub fn specs(limits: &BTreeMap<String, RateLimit>) -> Vec<RateSpec> {
    let mut out = Vec::new();
    for (account, limit) in limits {
        if let Some(rpm) = limit.requests_per_minute {
            let (capacity, per_second) = shape(rpm, IN_HAND);
            out.push(RateSpec { account: account.clone(), kind: RateKind::Requests, capacity, per_second });
        }
        if let Some(tpm) = limit.tokens_per_minute {
            // estimates, corrected afterwards: no unit is in hand the way a request is
            let (capacity, per_second) = shape(tpm, Duration::ZERO);
            out.push(RateSpec { account: account.clone(), kind: RateKind::Tokens, capacity, per_second });
        }
    }
    out
}

/// The fleet bucket of a per-minute limit whose units may be in hand for `in_hand` before the
/// provider sees them: refilled at a sixtieth of it per second, holding the per-minute figure
/// less what refills in `in_hand` (at least one).
pub fn shape(per_minute: u64, in_hand: Duration) -> (f64, f64) {
    let per_second = per_minute as f64 / 60.0;
    let margin = (per_second * in_hand.as_secs_f64()).ceil();
    ((per_minute as f64 - margin).max(1.0), per_second)
}

/// Every limited account this worker's agents name.
pub(crate) struct Limits {
    accounts: HashMap<String, Arc<Account>>,
}

impl Limits {
    pub fn new(store: &Arc<dyn Store>, limits: &BTreeMap<String, RateLimit>) -> Self {
        let mut accounts = HashMap::new();
        let specs = specs(limits);
        for spec in specs {
            let account = accounts.entry(spec.account.clone()).or_insert_with(|| Account {
                name: spec.account.clone(),
                requests: None,
                tokens: None,
            });
            let bucket = Some(Bucket::new(store.clone(), spec.clone()));
            match spec.kind {
                RateKind::Requests => account.requests = bucket,
                RateKind::Tokens => account.tokens = bucket,
            }
        }
        Limits { accounts: accounts.into_iter().map(|(k, v)| (k, Arc::new(v))).collect() }
    }

    pub fn specs(&self) -> Vec<RateSpec> {
        let mut out: Vec<RateSpec> = Vec::new();
        for a in self.accounts.values() {
            out.extend(a.requests.iter().chain(a.tokens.iter()).map(|b| b.spec.clone()));
        }
        out
    }

    pub fn get(&self, account: &str) -> Option<&Arc<Account>> {
        self.accounts.get(account)
    }
}

/// One provider account's buckets, as this worker takes them.
pub(crate) struct Account {
    name: String,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Account {
    /// How many of `want` tasks a claim may take for an agent of this account: none while a
    /// bucket is known to be empty, else no more than the requests it is known to hold.
    pub fn admit(&self, want: u32) -> u32 {
        if want == 0 {
            return 0;
        }
        let now = Instant::now();
        if let Some(t) = &self.tokens {
            if t.known(now) < 1.0 {
                return 0;
            }
        }
        match &self.requests {
            Some(r) => {
                // requests already waiting here come first
                let free = r.known(now) - r.waiting.load(Ordering::Acquire) as f64;
                want.min(free.floor().clamp(0.0, u32::MAX as f64) as u32)
            }
            None => want,
        }
    }

    /// Waits for one request (and `tokens` tokens, when the account limits tokens); false when
    /// cancelled first.
    pub async fn acquire(&self, tokens: u64, cancel: &CancellationToken) -> bool {
        if let Some(r) = &self.requests {
            if !r.units(&self.name, 1, cancel).await {
                return false;
            }
        }
        match (&self.tokens, tokens) {
            (Some(t), n) if n > 0 => t.units(&self.name, t.whole_take(n), cancel).await,
            _ => true,
        }
    }

    /// Corrects the tokens taken for a request's estimate by what it used. Units to give
    /// back ride on the next take (held back meanwhile: conservative); a debt is written now.
    pub async fn settle(&self, estimated: u64, used: u64) {
        let Some(t) = &self.tokens else { return };
        let took = t.whole_take(estimated);
        let adjust = took as i64 - used.min(i64::MAX as u64) as i64;
        if adjust >= 0 {
            t.give_back.fetch_add(adjust, Ordering::AcqRel);
            return;
        }
        let adjust = adjust + t.give_back.swap(0, Ordering::AcqRel);
        let take = RateTake { account: self.name.clone(), kind: RateKind::Tokens, want: 0, min: 0, adjust };
        match t.store.take_rate(&take).await {
            Ok(Some(g)) => t.note(g.level),
            Ok(None) => tracing::warn!(account = %self.name, "token bucket gone: correction dropped"),
            Err(e) => tracing::warn!(account = %self.name, error = %e, "cannot correct the token bucket"),
        }
    }
}

#[async_trait::async_trait]
impl smith_agents::limit::RateLimiter for Account {
    async fn acquire(&self, tokens: u64, cancel: &CancellationToken) -> bool {
        Account::acquire(self, tokens, cancel).await
    }

    async fn settle(&self, estimated: u64, used: u64) {
        Account::settle(self, estimated, used).await
    }
}

/// The share of a request bucket this worker holds.
struct Share {
    left: u64,
    until: Instant,
}

/// The level this worker last saw, and when.
struct Known {
    level: f64,
    at: Instant,
}

struct Bucket {
    store: Arc<dyn Store>,
    spec: RateSpec,
    /// Held by the request that is taking from the store; the others queue on it in order.
    share: tokio::sync::Mutex<Share>,
    /// Requests waiting for a unit, the one taking included: how many the next take asks for.
    waiting: AtomicUsize,
    /// How many requests a share asks for at least: doubled when a share is spent before its
    /// lease ends, halved when one is forfeited (a busy worker asks the store less often).
    ask: AtomicU64,
    /// Tokens to give back with the next take (estimates above what requests used, and the
    /// rest of expired token shares).
    give_back: AtomicI64,
    known: Mutex<Known>,
}

impl Bucket {
    fn new(store: Arc<dyn Store>, spec: RateSpec) -> Self {
        let now = Instant::now();
        Bucket {
            store,
            known: Mutex::new(Known { level: spec.capacity, at: now }),
            spec,
            share: tokio::sync::Mutex::new(Share { left: 0, until: now }),
            waiting: AtomicUsize::new(0),
            ask: AtomicU64::new(1),
            give_back: AtomicI64::new(0),
        }
    }

    fn kind(&self) -> &'static str {
        self.spec.kind.as_str()
    }

    /// The level as this worker last saw it, refilled since (other workers' takes unseen).
    fn known(&self, now: Instant) -> f64 {
        let k = self.known.lock().expect("known lock");
        let refilled = k.level + now.saturating_duration_since(k.at).as_secs_f64() * self.spec.per_second;
        refilled.min(self.spec.capacity)
    }

    fn note(&self, level: f64) {
        *self.known.lock().expect("known lock") = Known { level, at: Instant::now() };
    }

    /// How long until `need` units are there, from `level`.
    fn wait_for(&self, need: f64, level: f64) -> Duration {
        let secs = ((need - level) / self.spec.per_second).max(0.0);
        Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())).max(MIN_WAIT)
    }

    /// What a take for `n` tokens asks: all of them, or the whole bucket when it never holds
    /// that many (the correction takes the rest as debt).
    fn whole_take(&self, n: u64) -> u64 {
        n.min(self.spec.capacity.floor() as u64)
    }

    /// Waits for `n` units (a request is one), taken from this worker's share or, when it has
    /// too few, from the store; false when cancelled first.
    async fn units(&self, account: &str, n: u64, cancel: &CancellationToken) -> bool {
        // counted until let through or given up (dropped futures included): a take asks for
        // every waiting caller's units
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        let requests = self.spec.kind == RateKind::Requests;
        let mut share = tokio::select! {
            biased;
            _ = cancel.cancelled() => return false,
            share = self.share.lock() => share,
        };
        let mut waited: Option<Instant> = None;
        let ok = loop {
            let now = Instant::now();
            if share.left >= n && now < share.until {
                share.left -= n;
                if requests && share.left == 0 {
                    // spent within its lease: ask for more next time
                    self.ask.store((self.ask.load(Ordering::Acquire) * 2).min(MAX_SHARE), Ordering::Release);
                }
                break true;
            }
            if share.left > 0 && requests {
                // a request unit is only good within its lease: forfeited, and the ask halved
                metrics::rate_forfeited(account, self.kind(), share.left);
                self.ask.store((self.ask.load(Ordering::Acquire) / 2).max(1), Ordering::Release);
            } else if share.left > 0 {
                // tokens are estimates, never in hand: what is left goes back with the next take
                self.give_back.fetch_add(share.left as i64, Ordering::AcqRel);
            }
            share.left = 0;
            // the units of every caller waiting here, or (requests) what recent shares needed
            let waiting = (self.waiting.load(Ordering::Acquire) as u64).max(1);
            let want = if requests {
                waiting.max(self.ask.load(Ordering::Acquire)).min(MAX_SHARE)
            } else {
                n.saturating_mul(waiting).min(self.whole_take(u64::MAX)).max(n)
            };
            let adjust = self.give_back.swap(0, Ordering::AcqRel);
            let take = RateTake { account: account.to_string(), kind: self.spec.kind, want, min: n, adjust };
            let wait = match self.take(&take).await {
                Some(g) if g.granted > 0 => {
                    metrics::rate_taken(account, self.kind(), g.granted);
                    *share = Share { left: g.granted - n, until: Instant::now() + SHARE_LEASE };
                    break true;
                }
                Some(g) => self.wait_for(n as f64, g.level),
                None => {
                    // not written: kept for the next take
                    self.give_back.fetch_add(adjust, Ordering::AcqRel);
                    ERROR_WAIT
                }
            };
            waited.get_or_insert(now);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break false,
                _ = tokio::time::sleep(wait) => {}
            }
        };
        if let Some(since) = waited {
            metrics::rate_waited(account, self.kind(), since.elapsed());
        }
        ok
    }

    /// One take from the store; `None` after an error (logged). A bucket the store lost is
    /// declared again.
    async fn take(&self, take: &RateTake) -> Option<smith_store::RateGrant> {
        let mut declared = false;
        loop {
            match self.store.take_rate(take).await {
                Ok(Some(g)) => {
                    self.note(g.level);
                    return Some(g);
                }
                Ok(None) if !declared => {
                    declared = true;
                    if let Err(e) = self.store.declare_rate_buckets(std::slice::from_ref(&self.spec)).await {
                        tracing::warn!(account = %take.account, error = %e, "cannot declare a rate bucket");
                        return None;
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(account = %take.account, kind = self.kind(), error = %e, "rate limit take failed");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn account(limit: RateLimit) -> (Arc<Account>, Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let opts = smith_store::OpenOptions { fsync: false, ..Default::default() };
        let store = smith_store::open(&url, &opts).await.unwrap();
        let limits = Limits::new(&store, &BTreeMap::from([("team".to_string(), limit)]));
        store.declare_rate_buckets(&limits.specs()).await.unwrap();
        (limits.get("team").unwrap().clone(), store, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_past_the_burst_wait_for_the_refill_and_a_cancel_ends_the_wait() {
        // 120 a minute: a burst of 118, then two a second
        let limit = RateLimit { requests_per_minute: Some(120), tokens_per_minute: None };
        let (account, store, _dir) = account(limit).await;
        let never = CancellationToken::new();
        let started = std::time::Instant::now();
        let mut waiters = Vec::new();
        for _ in 0..120 {
            let (account, never) = (account.clone(), never.clone());
            waiters.push(tokio::spawn(async move { account.acquire(0, &never).await }));
        }
        for w in waiters {
            assert!(w.await.unwrap());
        }
        let took = started.elapsed();
        // the last two needed a second of refill, give or take a share's rounding
        assert!(took >= Duration::from_millis(700), "120 requests in {took:?}: past the bucket");
        assert_eq!(account.admit(5), 0, "the bucket was just seen empty: claims wait");
        let level = store.rate_buckets().await.unwrap()[0].level;
        assert!(level < 1.0, "{level}");
        let cancel = CancellationToken::new();
        let waiting = tokio::spawn({
            let (account, cancel) = (account.clone(), cancel.clone());
            async move { account.acquire(0, &cancel).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        cancel.cancel();
        // cancelled, or let through by a refill first: either way it returns at once
        let _ = tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("a cancel ends the wait");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_are_taken_by_estimate_and_settled_by_use() {
        let limit = RateLimit { requests_per_minute: None, tokens_per_minute: Some(6000) };
        let (account, store, _dir) = account(limit).await;
        let never = CancellationToken::new();
        assert!(account.acquire(1000, &never).await);
        let level = store.rate_buckets().await.unwrap()[0].level;
        assert!((5000.0..5010.0).contains(&level), "{level}");
        // it used 3000: 2000 more are taken as debt
        account.settle(1000, 3000).await;
        let level = store.rate_buckets().await.unwrap()[0].level;
        assert!((3000.0..3010.0).contains(&level), "{level}");
        // an estimate over the bucket takes the whole bucket, and waits for it
        account.settle(0, 4000).await;
        assert_eq!(account.admit(3), 0, "the bucket is in debt: claims wait");
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert!(!account.acquire(10_000, &cancel).await, "cancelled while waiting");
    }

    #[test]
    fn a_bucket_leaves_room_for_what_refills_while_units_are_in_hand() {
        assert_eq!(shape(60, IN_HAND), (59.0, 1.0));
        assert_eq!(shape(600, IN_HAND), (590.0, 10.0));
        assert_eq!(shape(1, IN_HAND), (1.0, 1.0 / 60.0));
        assert_eq!(shape(100_000, Duration::ZERO), (100_000.0, 100_000.0 / 60.0));
    }
}
