//! The measured baseline `smith bench --scenario baseline --out FILE` writes, as the
//! measured model reads it, and the one checked in beside the benchmarks, which the measured
//! model uses when it is given none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the checked-in baseline lives, from the repository's root: the one source of truth,
/// compiled in as [`CHECKED_IN`] (BENCHMARKS.md says how it was measured).
pub const CHECKED_IN_PATH: &str = "bench/baseline-2026-12-07.json";
/// The text of [`CHECKED_IN_PATH`].
pub const CHECKED_IN: &str = include_str!("../../../bench/baseline-2026-12-07.json");
/// The executor the measured model sizes agents as when the baseline has it and no other is
/// asked for: the seed sized Claude Code agents.
pub const DEFAULT_EXECUTOR: &str = "claude-code";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
    /// Where it was read from (a path, or the checked-in file's): not part of the file.
    #[serde(skip)]
    pub origin: String,
    pub scenario: String,
    pub version: u32,
    pub at: String,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub host: Option<Host>,
    /// Agent (executor) name → what one running agent of it costs.
    pub executors: BTreeMap<String, ExecutorCost>,
    pub sse: SseCost,
    /// The server's resident memory with nothing running.
    pub idle_rss_bytes: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Host {
    pub cpus: u32,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecutorCost {
    /// Concurrent agents the figures were measured with.
    pub agents: u64,
    pub memory_bytes_per_agent: f64,
    /// vCPU one running agent keeps busy.
    pub cpu_per_agent: f64,
    pub events_per_task: f64,
    pub task_seconds: f64,
    /// CPU seconds per minute of agent run time over the tasks' whole lives, start-up
    /// included (baselines before 2026-12-07 lack it).
    #[serde(default)]
    pub cpu_seconds_per_agent_minute: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SseCost {
    pub connections: u64,
    pub memory_bytes_per_connection: f64,
}

impl Baseline {
    /// The checked-in baseline ([`CHECKED_IN_PATH`]), compiled in.
    pub fn checked_in() -> Baseline {
        let origin = format!("{CHECKED_IN_PATH} (built in)");
        Baseline::parse(CHECKED_IN, &origin).expect("the checked-in baseline parses (a unit test checks it)")
    }

    /// Parses and checks a baseline file; `origin` names it in errors and in the plan.
    pub fn parse(text: &str, origin: &str) -> Result<Baseline> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let mut b: Baseline = serde::Deserialize::deserialize(de).map_err(|e| {
            Error::Baseline(format!(
                "{origin}: {e} (expected the JSON `smith bench --scenario baseline --out FILE` writes)"
            ))
        })?;
        if b.scenario != "baseline" {
            return Err(Error::Baseline(format!(
                "{origin}: it is the output of the `{}` scenario; the measured model needs `smith bench --scenario baseline --out FILE`",
                b.scenario
            )));
        }
        if b.version != 1 {
            return Err(Error::Baseline(format!(
                "{origin}: version {} is not understood (this smith reads version 1)",
                b.version
            )));
        }
        if b.executors.is_empty() {
            return Err(Error::Baseline(format!("{origin}: no executor was measured")));
        }
        let positive = |what: String, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::Baseline(format!("{origin}: {what} must be a positive number, not {v}")))
            }
        };
        // A measurement too small to see (a few agents or connections fitting in memory the
        // process already had) reads 0: allowed, and the plan warns about it.
        let not_negative = |what: String, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(Error::Baseline(format!("{origin}: {what} must be 0 or more, not {v}")))
            }
        };
        for (name, e) in &b.executors {
            not_negative(format!("executors.{name}.memory_bytes_per_agent"), e.memory_bytes_per_agent)?;
            not_negative(format!("executors.{name}.cpu_per_agent"), e.cpu_per_agent)?;
            positive(format!("executors.{name}.task_seconds"), e.task_seconds)?;
            positive(format!("executors.{name}.events_per_task"), e.events_per_task)?;
        }
        not_negative("sse.memory_bytes_per_connection".into(), b.sse.memory_bytes_per_connection)?;
        positive("idle_rss_bytes".into(), b.idle_rss_bytes)?;
        b.origin = origin.to_string();
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_baseline_parses_and_holds_claude_code_agents() {
        let b = Baseline::checked_in();
        assert_eq!(b.origin, "bench/baseline-2026-12-07.json (built in)");
        for executor in [DEFAULT_EXECUTOR, "sleep", "process-sleep"] {
            let e = &b.executors[executor];
            assert!(e.memory_bytes_per_agent > 0.0 && e.cpu_per_agent > 0.0, "{executor}: {e:?}");
            assert!(e.cpu_seconds_per_agent_minute.is_some_and(|c| c > 0.0), "{executor}: {e:?}");
        }
        // a Claude Code CLI holds far more than an idle `sleep` process
        assert!(b.executors[DEFAULT_EXECUTOR].memory_bytes_per_agent > 20e6, "{:?}", b.executors[DEFAULT_EXECUTOR]);
        assert!(b.sse.memory_bytes_per_connection > 0.0);
    }
}
