//! Cron expressions and when they fire in a named time zone (docs/schedules.md).
//!
//! [`Cron`] parses five fields (`minute hour day-of-month month day-of-week`) or six with
//! seconds first, plus the `@hourly`-style shorthands. [`Timetable`] is an expression in an IANA
//! zone and answers "the first fire strictly after this instant", correct across daylight-saving
//! transitions:
//!
//! - a local time that does not exist (the hour skipped when clocks spring forward) fires once,
//!   at the transition — the first instant after it that exists — however many matching times
//!   the gap swallowed (it coincides with a fire at the first valid minute, which is not doubled);
//! - a local time that happens twice (the hour repeated when clocks fall back) fires once, at
//!   its first occurrence (the earlier instant, still on daylight time): "daily at 01:30" means
//!   once a day, and the first 01:30 is when the wall clock first shows it. An expression whose
//!   hour field matches every hour (`*/2 * * * * *`, `0 * * * *`) is an interval, not a time of
//!   day: it fires through both passes, so its instants stay evenly spaced in real time.
//!
//! No I/O: the zone database is bundled into the binary (jiff's `tzdb-bundle-always`).

use crate::error::{Error, Result};
use crate::Micros;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
use std::fmt;
use std::str::FromStr;

/// A parsed cron expression: the set of values each field allows, as bit sets.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bits 1..=31.
    days: u32,
    /// Bits 1..=12.
    months: u16,
    /// Bits 0..=6, Sunday 0.
    weekdays: u8,
    /// Whether day-of-month / day-of-week were `*` (or `?`): with both restricted, a day that
    /// matches either fires (as in Vixie cron).
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// How far ahead a search looks before deciding an expression never fires (`0 0 30 2 *`):
/// longer than the longest gap between two 29ths of February.
const HORIZON_YEARS: i16 = 10;

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value a name at index 0 stands for.
    names_from: u32,
}

const SECOND: Field = Field { name: "second", min: 0, max: 59, names: &[], names_from: 0 };
const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[], names_from: 0 };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[], names_from: 0 };
const DAY: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[], names_from: 0 };
const MONTH: Field = Field { name: "month", min: 1, max: 12, names: &MONTHS, names_from: 1 };
// 7 is Sunday too; folded onto 0 after parsing
const WEEKDAY: Field = Field { name: "day-of-week", min: 0, max: 7, names: &WEEKDAYS, names_from: 0 };

impl Field {
    fn value(&self, s: &str) -> Result<u32> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = self.names.iter().position(|n| *n == upper) {
            return Ok(self.names_from + i as u32);
        }
        let v: u32 = s.parse().map_err(|_| Error::invalid(format!("{} field: {s:?} is not a number", self.name)))?;
        if v < self.min || v > self.max {
            return Err(Error::invalid(format!("{} field: {v} is out of range {}-{}", self.name, self.min, self.max)));
        }
        Ok(v)
    }

    /// The field's bit set, and whether it was `*` or `?`.
    fn parse(&self, text: &str) -> Result<(u64, bool)> {
        if text == "*" || text == "?" {
            return Ok((self.range(self.min, self.max, 1), true));
        }
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        Error::invalid(format!("{} field: step {s:?} must be a positive number", self.name))
                    })?;
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = if range == "*" || range == "?" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(Error::invalid(format!("{} field: range {range:?} runs backwards", self.name)));
                }
                (a, b)
            } else {
                let a = self.value(range)?;
                // `a/n`: from a to the end, every n
                (a, if step.is_some() { self.max } else { a })
            };
            bits |= self.range(lo, hi, step.unwrap_or(1));
        }
        Ok((bits, false))
    }

    fn range(&self, lo: u32, hi: u32, step: u32) -> u64 {
        let mut bits = 0u64;
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
        bits
    }
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron> {
        let trimmed = text.trim();
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(Error::invalid(format!(
                    "unknown shorthand {:?}: expected @yearly, @monthly, @weekly, @daily or @hourly",
                    crate::task::truncate(trimmed, 32)
                )))
            }
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(Error::invalid(format!(
                    "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first); this one has {n}"
                )))
            }
        };
        let (seconds, _) = SECOND.parse(sec)?;
        let (minutes, _) = MINUTE.parse(rest[0])?;
        let (hours, _) = HOUR.parse(rest[1])?;
        let (days, days_any) = DAY.parse(rest[2])?;
        let (months, _) = MONTH.parse(rest[3])?;
        let (mut weekdays, weekdays_any) = WEEKDAY.parse(rest[4])?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Cron {
            text: trimmed.to_string(),
            seconds,
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_any,
            weekdays_any,
        })
    }

    /// The expression as it was written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the hour field allows every hour: the expression is an interval, and fires
    /// through both passes of a repeated hour.
    fn every_hour(&self) -> bool {
        self.hours == (1 << 24) - 1
    }

    fn day_matches(&self, y: i16, m: i8, d: i8) -> bool {
        let dom = self.days & (1 << d) != 0;
        let Ok(date) = jiff::civil::Date::new(y, m, d) else { return false };
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first local (civil) time at or after `from`, to the second, that the expression
    /// matches; `None` if none within [`HORIZON_YEARS`].
    pub fn next_local(&self, from: DateTime) -> Option<DateTime> {
        let limit = from.year().saturating_add(HORIZON_YEARS);
        let (mut y, mut mo, mut d) = (from.year(), from.month(), from.day());
        let (mut h, mut mi, mut s) = (from.hour() as u32, from.minute() as u32, from.second() as u32);
        if from.subsec_nanosecond() > 0 {
            s += 1;
        }
        loop {
            // carry overflowing units upwards
            if s > 59 {
                s = 0;
                mi += 1;
            }
            if mi > 59 {
                mi = 0;
                h += 1;
            }
            if h > 23 {
                h = 0;
                d += 1;
            }
            if d > days_in_month(y, mo) {
                d = 1;
                mo += 1;
            }
            if mo > 12 {
                mo = 1;
                y += 1;
            }
            if y > limit {
                return None;
            }
            if self.months & (1 << mo) == 0 {
                (mo, d, h, mi, s) = (mo + 1, 1, 0, 0, 0);
                continue;
            }
            if !self.day_matches(y, mo, d) {
                (d, h, mi, s) = (d + 1, 0, 0, 0);
                continue;
            }
            match next_bit(u64::from(self.hours), h, 23) {
                Some(v) if v == h => {}
                Some(v) => {
                    (h, mi, s) = (v, 0, 0);
                    continue;
                }
                None => {
                    (h, mi, s) = (24, 0, 0);
                    continue;
                }
            }
            match next_bit(self.minutes, mi, 59) {
                Some(v) if v == mi => {}
                Some(v) => {
                    (mi, s) = (v, 0);
                    continue;
                }
                None => {
                    (mi, s) = (60, 0);
                    continue;
                }
            }
            match next_bit(self.seconds, s, 59) {
                Some(v) => return DateTime::new(y, mo, d, h as i8, mi as i8, v as i8, 0).ok(),
                None => {
                    s = 60;
                    continue;
                }
            }
        }
    }
}

/// The lowest set bit of `bits` at `from` or above (up to `max`).
fn next_bit(bits: u64, from: u32, max: u32) -> Option<u32> {
    if from > max {
        return None;
    }
    let rest = bits >> from;
    if rest == 0 {
        return None;
    }
    let v = from + rest.trailing_zeros();
    (v <= max).then_some(v)
}

fn days_in_month(y: i16, m: i8) -> i8 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

impl FromStr for Cron {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cron> {
        Cron::parse(s)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({:?})", self.text)
    }
}

/// An IANA time zone by name (`Europe/Berlin`, `UTC`), from the bundled database.
pub fn zone(name: &str) -> Result<TimeZone> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::invalid("a time zone is an IANA name such as \"Europe/Berlin\" or \"UTC\""));
    }
    TimeZone::get(name).map_err(|_| {
        Error::invalid(format!(
            "unknown time zone {:?}: expected an IANA name such as \"Europe/Berlin\" or \"UTC\"",
            crate::task::truncate(name, 64)
        ))
    })
}

/// A cron expression in a time zone: when it fires, as instants.
#[derive(Clone, Debug)]
pub struct Timetable {
    pub cron: Cron,
    pub zone: TimeZone,
}

impl Timetable {
    pub fn new(cron: &str, zone_name: &str) -> Result<Timetable> {
        Ok(Timetable { cron: Cron::parse(cron)?, zone: zone(zone_name)? })
    }

    /// The first fire strictly after `after` (fires are whole seconds); `None` if it never
    /// fires again (within the search horizon).
    pub fn next_after(&self, after: Micros) -> Option<Micros> {
        let first = after.0.div_euclid(1_000_000).checked_add(1)?;
        let limit = first.saturating_add(i64::from(HORIZON_YEARS) * 366 * 86_400);
        let mut t = Timestamp::from_second(first).ok()?;
        // the segment of constant offset holding `t`: where it began and the offset before it
        let (mut start, mut before) = match self.zone.preceding(second_after(t)?).next() {
            Some(tr) => (Some(tr.timestamp()), self.zone.to_offset(second_before(tr.timestamp())?)),
            None => (None, self.zone.to_offset(t)),
        };
        loop {
            let offset = self.zone.to_offset(t);
            let end = self.zone.following(t).next().map(|tr| tr.timestamp());
            let mut from = offset.to_datetime(t);
            if let Some(s) = start {
                if offset > before && t <= s {
                    // spring forward: a match in the skipped local times fires at the transition
                    let (gap_start, gap_end) = (before.to_datetime(s), offset.to_datetime(s));
                    if self.cron.next_local(gap_start).is_some_and(|c| c < gap_end) {
                        return Some(micros(s));
                    }
                }
                if offset < before && !self.cron.every_hour() {
                    // fall back: the repeated local times fired in their first pass
                    from = from.max(before.to_datetime(s));
                }
            }
            let found = self.cron.next_local(from);
            match (found, end) {
                (Some(c), None) => return instant(offset, c),
                (Some(c), Some(e)) if c < offset.to_datetime(e) => return instant(offset, c),
                (_, None) => return None,
                (_, Some(e)) => {
                    if e.as_second() > limit {
                        return None;
                    }
                    (start, before, t) = (Some(e), offset, e);
                }
            }
        }
    }

    /// The next `n` fires strictly after `after`.
    pub fn upcoming(&self, after: Micros, n: usize) -> Vec<Micros> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            let Some(next) = self.next_after(at) else { break };
            out.push(next);
            at = next;
        }
        out
    }
}

fn instant(offset: Offset, c: DateTime) -> Option<Micros> {
    offset.to_timestamp(c).ok().map(micros)
}

fn micros(t: Timestamp) -> Micros {
    Micros(t.as_second().saturating_mul(1_000_000))
}

fn second_after(t: Timestamp) -> Option<Timestamp> {
    Timestamp::from_second(t.as_second().checked_add(1)?).ok()
}

fn second_before(t: Timestamp) -> Option<Timestamp> {
    Timestamp::from_second(t.as_second().checked_sub(1)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Micros {
        Micros::parse_rfc3339(s).unwrap_or_else(|| panic!("bad time {s}"))
    }

    /// The next `n` fires of `cron` in `zone` after `after`, as RFC 3339 UTC seconds.
    fn fires(cron: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        let t = Timetable::new(cron, zone).unwrap();
        t.upcoming(at(after), n).into_iter().map(|m| m.rfc3339().replace(".000000Z", "Z")).collect()
    }

    #[test]
    fn new_york_spring_forward_fires_a_skipped_time_once_at_the_transition() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z); 02:30 never happens
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]
        );
        // hourly: 01:00 EST, then the skipped 02:00 and the real 03:00 EDT are one fire
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2026-03-08T05:30:00Z", 3),
            ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"]
        );
        // every 15 minutes through the gap: 01:45 EST, then 03:00 EDT once
        assert_eq!(
            fires("*/15 * * * *", "America/New_York", "2026-03-08T06:40:00Z", 3),
            ["2026-03-08T06:45:00Z", "2026-03-08T07:00:00Z", "2026-03-08T07:15:00Z"]
        );
    }

    #[test]
    fn new_york_fall_back_fires_a_repeated_time_once_at_its_first_occurrence() {
        // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z); 01:30 happens at 05:30Z and 06:30Z
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 3),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"]
        );
        // asked from inside the second pass, the repeated 01:30 is not fired again
        assert_eq!(fires("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z", 1), ["2026-11-02T06:30:00Z"]);
        // an interval keeps its spacing in real time through both passes
        assert_eq!(
            fires("*/30 * * * *", "America/New_York", "2026-11-01T04:15:00Z", 6),
            [
                "2026-11-01T04:30:00Z",
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T07:00:00Z"
            ]
        );
    }

    #[test]
    fn berlin_transitions() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z)
        assert_eq!(
            fires("0 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:30 at 00:30Z and 01:30Z
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // a time outside the transitions is untouched on either side
        assert_eq!(
            fires("0 9 * * MON-FRI", "Europe/Berlin", "2026-10-23T12:00:00Z", 2),
            ["2026-10-26T08:00:00Z", "2026-10-27T08:00:00Z"]
        );
    }

    #[test]
    fn seconds_field_and_utc() {
        assert_eq!(
            fires("*/2 * * * * *", "UTC", "2026-01-01T00:00:00.500Z", 3),
            ["2026-01-01T00:00:02Z", "2026-01-01T00:00:04Z", "2026-01-01T00:00:06Z"]
        );
        // strictly after: a fire time itself is not returned again
        assert_eq!(fires("*/2 * * * * *", "UTC", "2026-01-01T00:00:02Z", 1), ["2026-01-01T00:00:04Z"]);
        assert_eq!(fires("@hourly", "UTC", "2026-01-01T00:59:59Z", 1), ["2026-01-01T01:00:00Z"]);
        assert_eq!(fires("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1), ["2028-02-29T00:00:00Z"]);
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_given() {
        // the 13th, or any Friday (Vixie cron): 2026-02-06 is a Friday, 2026-02-13 both
        assert_eq!(
            fires("0 0 13 * FRI", "UTC", "2026-02-01T00:00:00Z", 3),
            ["2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z", "2026-02-20T00:00:00Z"]
        );
        // 7 is Sunday too
        assert_eq!(fires("0 0 * * 7", "UTC", "2026-02-01T00:00:01Z", 1), ["2026-02-08T00:00:00Z"]);
    }

    #[test]
    fn never_firing_expressions_have_no_next_fire() {
        let t = Timetable::new("0 0 30 2 *", "UTC").unwrap();
        assert_eq!(t.next_after(at("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        for (text, says) in [
            ("* * *", "5 fields"),
            ("61 * * * *", "minute field: 61 is out of range"),
            ("* 24 * * *", "hour field"),
            ("*/0 * * * *", "step"),
            ("5-2 * * * *", "runs backwards"),
            ("* * 0 * *", "day-of-month field"),
            ("* * * FOO *", "month field"),
            ("* * * * 8", "day-of-week field"),
            ("@sometimes", "unknown shorthand"),
            ("a * * * * *", "second field"),
        ] {
            let e = Cron::parse(text).expect_err(text);
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
        assert!(Cron::parse("0 0 1 jan,Jul mon-fri").is_ok());
        assert!(zone("Mars/Olympus").unwrap_err().message.contains("unknown time zone"));
        assert!(zone("Europe/Berlin").is_ok() && zone("UTC").is_ok());
    }
}
