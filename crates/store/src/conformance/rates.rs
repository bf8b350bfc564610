//! Conformance cases of the fleet-wide rate buckets (`Store::take_rate` and friends).

use super::S;
use crate::{RateKind, RateSpec, RateTake};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spec(account: &str, capacity: f64, per_second: f64) -> RateSpec {
    RateSpec { account: account.into(), kind: RateKind::Requests, capacity, per_second }
}

fn take(account: &str, want: u64, min: u64, adjust: i64) -> RateTake {
    RateTake { account: account.into(), kind: RateKind::Requests, want, min, adjust }
}

pub async fn rate_buckets_refill_and_never_grant_more_than_they_hold(store: S) {
    assert_eq!(store.take_rate(&take("acme", 1, 1, 0)).await.unwrap(), None, "never declared");
    store.declare_rate_buckets(&[spec("acme", 10.0, 5.0)]).await.unwrap();
    let tokens = RateSpec { kind: RateKind::Tokens, ..spec("acme", 1000.0, 100.0) };
    store.declare_rate_buckets(&[tokens]).await.unwrap();
    // a new bucket starts full; a take gets what it wants while the bucket holds it
    let g = store.take_rate(&take("acme", 4, 1, 0)).await.unwrap().unwrap();
    assert_eq!(g.granted, 4);
    assert!((6.0..=7.0).contains(&g.level), "{g:?}");
    // then no more than the whole units it holds
    let g = store.take_rate(&take("acme", 100, 1, 0)).await.unwrap().unwrap();
    assert!((6..=7).contains(&g.granted), "{g:?}");
    assert!((0.0..1.0).contains(&g.level), "{g:?}");
    // a minimum it does not hold gets nothing and leaves the level as it was
    let g = store.take_rate(&take("acme", 5, 5, 0)).await.unwrap().unwrap();
    assert_eq!(g.granted, 0, "{g:?}");
    // it refills over time at its rate
    tokio::time::sleep(Duration::from_millis(700)).await;
    let g = store.take_rate(&take("acme", 5, 3, 0)).await.unwrap().unwrap();
    assert!((3..=5).contains(&g.granted), "refilled by about 3.5: {g:?}");
    // a correction may leave a debt; takes then get nothing until it is refilled
    let g = store.take_rate(&take("acme", 0, 0, -20)).await.unwrap().unwrap();
    assert!(g.granted == 0 && g.level < -15.0, "{g:?}");
    assert_eq!(store.take_rate(&take("acme", 1, 1, 0)).await.unwrap().unwrap().granted, 0);
    // one that gives units back never fills it past its capacity
    let g = store.take_rate(&take("acme", 0, 0, 1000)).await.unwrap().unwrap();
    assert_eq!(g.level, 10.0, "{g:?}");
    // a new shape keeps the level, held to the new capacity
    store.declare_rate_buckets(&[spec("acme", 3.0, 5.0)]).await.unwrap();
    let buckets = store.rate_buckets().await.unwrap();
    let kinds: Vec<_> = buckets.iter().map(|b| (b.account.as_str(), b.kind)).collect();
    assert_eq!(kinds, [("acme", RateKind::Requests), ("acme", RateKind::Tokens)]);
    let r = &buckets[0];
    assert_eq!((r.capacity, r.per_second, r.level), (3.0, 5.0, 3.0), "{r:?}");
    assert!(buckets[1].level <= 1000.0 && buckets[1].level > 900.0, "{:?}", buckets[1]);
    // refused before anything is written
    assert!(store.take_rate(&take("acme", 1, 2, 0)).await.is_err(), "min above want");
    assert!(store.take_rate(&take("", 1, 1, 0)).await.is_err(), "no account");
    assert!(store.declare_rate_buckets(&[spec("acme", 10.0, 0.0)]).await.is_err(), "no rate");
    assert!(store.declare_rate_buckets(&[spec("acme", 0.5, 1.0)]).await.is_err(), "under one unit");
}

pub async fn concurrent_rate_takers_never_exceed_the_rate(store: S) {
    let (capacity, rate) = (20.0, 40.0);
    store.declare_rate_buckets(&[spec("shared", capacity, rate)]).await.unwrap();
    let started = Instant::now();
    let run = Duration::from_millis(1200);
    let mut takers = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        takers.push(tokio::spawn(async move {
            let mut got = 0;
            while started.elapsed() < run {
                got += store.take_rate(&take("shared", 3, 1, 0)).await.unwrap().unwrap().granted;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            got
        }));
    }
    let mut total = 0;
    for t in takers {
        total += t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let most = capacity + rate * elapsed;
    assert!(total as f64 <= most, "{total} granted in {elapsed:.2} s: more than the {most:.1} the bucket allows");
    assert!(total as f64 >= capacity, "{total} granted: not even the first burst");
}
