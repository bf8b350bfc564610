//! Wall-clock timestamps as microseconds since the Unix epoch, rendered as RFC 3339.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch. Stored as an integer, shown as RFC 3339 with microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    pub fn now() -> Self {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Micros(d.as_micros() as i64)
    }

    pub fn plus(self, d: Duration) -> Self {
        Micros(self.0.saturating_add(d.as_micros() as i64))
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0.max(0) as u64)
    }

    pub fn rfc3339(self) -> String {
        humantime::format_rfc3339_micros(self.to_system_time()).to_string()
    }

    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = humantime::parse_rfc3339_weak(s).ok()?;
        let d = t.duration_since(UNIX_EPOCH).ok()?;
        Some(Micros(d.as_micros() as i64))
    }

    /// Microseconds from `earlier` to `self`, never negative.
    pub fn since(self, earlier: Micros) -> i64 {
        (self.0 - earlier.0).max(0)
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Micros::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 timestamp"))
    }
}

/// Serde helpers for durations written as "10m", "500ms" or a number of milliseconds.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Millis(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Millis(ms) => Ok(Duration::from_millis(ms)),
            Repr::Text(s) => humantime::parse_duration(&s).map_err(|e| {
                serde::de::Error::custom(format!("invalid duration {s:?}: {e} (use e.g. \"500ms\", \"10s\", \"10m\")"))
            }),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub mod option {
        use serde::{Deserializer, Serializer};
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(serde::Deserialize)]
            struct Wrap(#[serde(deserialize_with = "super::deserialize")] Duration);
            let v: Option<Wrap> = serde::Deserialize::deserialize(d)?;
            Ok(v.map(|w| w.0))
        }

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_durations_round_trip_including_none() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "super::duration::option", default)]
            d: Option<Duration>,
        }
        for v in [T { d: None }, T { d: Some(Duration::from_millis(1500)) }] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v, "{json}");
        }
    }

    #[test]
    fn rfc3339_round_trip_keeps_microseconds() {
        let t = Micros(1_764_246_000_123_456);
        let s = t.rfc3339();
        assert!(s.ends_with(".123456Z"), "{s}");
        assert_eq!(Micros::parse_rfc3339(&s), Some(t));
    }
}
