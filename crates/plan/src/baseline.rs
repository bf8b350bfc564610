//! The measured baseline `smith bench --scenario baseline --out FILE` writes, as the
//! measured model reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Baseline {
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SseCost {
    pub connections: u64,
    pub memory_bytes_per_connection: f64,
}

impl Baseline {
    /// Parses and checks a baseline file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Baseline> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let b: Baseline = serde::Deserialize::deserialize(de).map_err(|e| {
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
        Ok(b)
    }
}
