//! Fleet-wide token buckets of provider rate limits (docs/rate-limits.md): what both backends
//! share — the records, the checks before a write, and the arithmetic of a take, which SQLite
//! runs in its writer and PostgreSQL mirrors in `smith_rate_take` (the conformance suite holds
//! them to the same answers).
//!
//! A bucket is keyed by provider account and kind. Its level refills continuously at
//! `per_second` up to `capacity`, dated on the store's clock; a take removes whole units only
//! when at least `min` are there, and a correction (`adjust`) may leave it negative — a debt
//! that later takes wait out.

use crate::Result;
use serde::Serialize;
use smith_core::Micros;

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    Requests,
    Tokens,
}

impl RateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Requests => "requests",
            RateKind::Tokens => "tokens",
        }
    }

    pub fn parse(s: &str) -> Option<RateKind> {
        match s {
            "requests" => Some(RateKind::Requests),
            "tokens" => Some(RateKind::Tokens),
            _ => None,
        }
    }
}

/// A bucket's shape, as a worker's configuration gives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateSpec {
    pub account: String,
    pub kind: RateKind,
    /// The most the bucket holds (the largest burst).
    pub capacity: f64,
    /// Units added per second.
    pub per_second: f64,
}

/// A bucket as stored, its level brought to `at` (the store's clock).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateBucket {
    pub account: String,
    pub kind: RateKind,
    pub capacity: f64,
    pub per_second: f64,
    /// Units there now; negative while a correction's debt is being refilled.
    pub level: f64,
    pub at: Micros,
}

/// One short write against a bucket: first `adjust` (a correction: positive gives units back,
/// capped at the capacity; negative takes them as debt), then up to `want` whole units if at
/// least `min` are there (none otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct RateTake {
    pub account: String,
    pub kind: RateKind,
    pub want: u64,
    pub min: u64,
    pub adjust: i64,
}

/// What a take got, and the level it left.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateGrant {
    pub granted: u64,
    pub level: f64,
}

pub(crate) fn check_spec(s: &RateSpec) -> Result<()> {
    let ok = !s.account.is_empty()
        && s.capacity.is_finite()
        && s.capacity >= 1.0
        && s.per_second.is_finite()
        && s.per_second > 0.0;
    if !ok {
        let m = format!(
            "rate bucket {}/{}: needs an account, capacity >= 1 and a positive rate",
            s.account,
            s.kind.as_str()
        );
        return Err(smith_core::Error::invalid(m).into());
    }
    Ok(())
}

pub(crate) fn check_take(t: &RateTake) -> Result<()> {
    if t.account.is_empty() || t.min > t.want || (t.want > 0 && t.min == 0) || t.want > i64::MAX as u64 {
        let m = format!("rate take {}/{}: needs an account and 0 < min <= want", t.account, t.kind.as_str());
        return Err(smith_core::Error::invalid(m).into());
    }
    Ok(())
}

/// The level `elapsed_us` after it was `level`: refilled, never past the capacity (a level
/// already above a lowered capacity comes down to it).
pub(crate) fn refill(level: f64, capacity: f64, per_second: f64, elapsed_us: i64) -> f64 {
    (level + elapsed_us.max(0) as f64 / 1e6 * per_second).min(capacity)
}

/// A take against a bucket whose level (already refilled to now) is `level`: the grant and the
/// level it leaves. The same arithmetic as PostgreSQL's `smith_rate_take`.
pub(crate) fn take(level: f64, capacity: f64, t: &RateTake) -> RateGrant {
    let level = (level + t.adjust as f64).min(capacity);
    let granted = if t.want > 0 && level >= t.min as f64 { t.want.min(level.floor() as u64) } else { 0 };
    RateGrant { granted, level: level - granted as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(want: u64, min: u64, adjust: i64) -> RateTake {
        RateTake { account: "a".into(), kind: RateKind::Requests, want, min, adjust }
    }

    #[test]
    fn takes_whole_units_only_when_the_minimum_is_there() {
        assert_eq!(take(5.5, 10.0, &t(3, 1, 0)), RateGrant { granted: 3, level: 2.5 });
        assert_eq!(take(2.5, 10.0, &t(3, 1, 0)), RateGrant { granted: 2, level: 0.5 });
        assert_eq!(take(2.5, 10.0, &t(3, 3, 0)), RateGrant { granted: 0, level: 2.5 });
        assert_eq!(take(0.9, 10.0, &t(1, 1, 0)), RateGrant { granted: 0, level: 0.9 });
        // a correction first: debt, or units back up to the capacity
        assert_eq!(take(2.0, 10.0, &t(0, 0, -5)), RateGrant { granted: 0, level: -3.0 });
        assert_eq!(take(8.0, 10.0, &t(0, 0, 5)), RateGrant { granted: 0, level: 10.0 });
    }

    #[test]
    fn refills_up_to_the_capacity() {
        assert_eq!(refill(0.0, 60.0, 1.0, 1_500_000), 1.5);
        assert_eq!(refill(-3.0, 60.0, 2.0, 1_000_000), -1.0);
        assert_eq!(refill(59.0, 60.0, 1.0, 10_000_000), 60.0);
        assert_eq!(refill(1.0, 60.0, 1.0, -5), 1.0);
        assert_eq!(refill(90.0, 60.0, 1.0, 0), 60.0);
    }
}
