//! Nodes: the running supervisor, worker and gateway processes, as registered in the store.

use crate::time::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Supervisor,
    Worker,
    Gateway,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Supervisor => "supervisor",
            NodeRole::Worker => "worker",
            NodeRole::Gateway => "gateway",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "supervisor" => Some(NodeRole::Supervisor),
            "worker" => Some(NodeRole::Worker),
            "gateway" => Some(NodeRole::Gateway),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heart-beating and taking work.
    Alive,
    /// Stopping: takes no new work, finishing what it holds.
    Draining,
    /// Stopped cleanly.
    Stopped,
    /// Missed its heartbeats; its tasks were requeued.
    Dead,
    /// A worker that missed its heartbeats: its tasks were requeued, and it takes no work until
    /// readmitted (its heartbeats still count, but do not make it alive again).
    Quarantined,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Alive => "alive",
            NodeStatus::Draining => "draining",
            NodeStatus::Stopped => "stopped",
            NodeStatus::Dead => "dead",
            NodeStatus::Quarantined => "quarantined",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alive" => Some(NodeStatus::Alive),
            "draining" => Some(NodeStatus::Draining),
            "stopped" => Some(NodeStatus::Stopped),
            "dead" => Some(NodeStatus::Dead),
            "quarantined" => Some(NodeStatus::Quarantined),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub role: NodeRole,
    pub version: String,
    pub address: Option<String>,
    pub status: NodeStatus,
    pub started_at: Micros,
    pub heartbeat_at: Micros,
    /// Role-specific load figures (running agents, capacity, connections…).
    pub load: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text_and_json() {
        use NodeStatus::*;
        for status in [Alive, Draining, Stopped, Dead, Quarantined] {
            assert_eq!(NodeStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), serde_json::json!(status.as_str()));
        }
        assert_eq!(NodeStatus::parse("zombie"), None);
    }
}
