//! Memory of running process agents: the resident memory of every process in each agent's
//! process group, summed by agent, as the gauges `smith_agent_memory_bytes{agent}` and
//! `smith_agent_processes{agent}`.
//!
//! [`run_group`](crate::process::run_group) registers each group it starts for as long as the
//! run lasts. A sample is one pass over `/proc`, whatever the number of groups: each process's
//! `stat` gives both its group and its resident pages. Pages shared between the processes of a
//! group (a forked child's copy-on-write pages, shared libraries) count once per process, as
//! `ps` counts them: an upper bound, cheap to read, unlike PSS from `smaps_rollup`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

pub const AGENT_MEMORY: &str = "smith_agent_memory_bytes";
pub const AGENT_PROCESSES: &str = "smith_agent_processes";

/// Process groups of running agents: pgid → agent name.
static GROUPS: Mutex<Option<HashMap<i32, Arc<str>>>> = Mutex::new(None);
/// Agents given a nonzero value by the last sample, so that one gone since drops to 0.
static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Records a running agent's process group until dropped.
#[must_use = "the group is unregistered when the registration is dropped"]
pub(crate) struct Registration {
    pgid: i32,
}

/// Registers `pgid` as a process group of `agent` until the returned guard is dropped.
pub(crate) fn register(pgid: i32, agent: &str) -> Registration {
    if pgid <= 0 {
        // no group to measure (kernel threads are in group 0)
        return Registration { pgid };
    }
    GROUPS.lock().expect("agent groups").get_or_insert_with(HashMap::new).insert(pgid, Arc::from(agent));
    Registration { pgid }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(groups) = GROUPS.lock().expect("agent groups").as_mut() {
            groups.remove(&self.pgid);
        }
    }
}

/// What one agent's running processes hold in memory now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMemory {
    pub agent: String,
    /// Resident set size summed over the agent's processes.
    pub bytes: u64,
    /// Live processes in the agent's groups.
    pub processes: u32,
}

/// The memory of every agent with a registered process group, sorted by agent name. An agent
/// whose group is registered but has no live process yet (or any more) has 0 of both.
/// Blocking: reads `/proc`.
pub fn agent_memory() -> Vec<AgentMemory> {
    // a copy, so that runs starting and ending meanwhile do not wait for the scan
    let groups = match GROUPS.lock().expect("agent groups").as_ref() {
        Some(g) if !g.is_empty() => g.clone(),
        _ => return Vec::new(),
    };
    let mut by_agent: HashMap<&str, AgentMemory> = HashMap::new();
    for agent in groups.values() {
        by_agent.entry(&**agent).or_insert_with(|| AgentMemory { agent: agent.to_string(), bytes: 0, processes: 0 });
    }
    let page = page_size();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            // a process that exits between the listing and the read is simply not counted
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let Some(s) = GroupRss::parse(&stat) else { continue };
            let Some(agent) = groups.get(&s.pgid) else { continue };
            if s.state == 'Z' {
                continue;
            }
            let m = by_agent.get_mut(&**agent).expect("every registered agent has an entry");
            m.bytes += s.rss_pages * page;
            m.processes += 1;
        }
    }
    let mut out: Vec<AgentMemory> = by_agent.into_values().collect();
    out.sort_by(|a, b| a.agent.cmp(&b.agent));
    out
}

/// Samples [`agent_memory`] into the gauges; an agent that had a value before and has no
/// running group now is set to 0, so its series drops instead of staying stale. Blocking:
/// run it in `spawn_blocking`.
pub fn sample_agent_memory() {
    let now = agent_memory();
    let mut reported = REPORTED.lock().expect("reported agents");
    let reported = reported.get_or_insert_with(HashSet::new);
    let mut still = HashSet::with_capacity(now.len());
    for m in now {
        metrics::gauge!(AGENT_MEMORY, "agent" => m.agent.clone()).set(m.bytes as f64);
        metrics::gauge!(AGENT_PROCESSES, "agent" => m.agent.clone()).set(f64::from(m.processes));
        still.insert(m.agent);
    }
    for gone in reported.difference(&still) {
        metrics::gauge!(AGENT_MEMORY, "agent" => gone.clone()).set(0.0);
        metrics::gauge!(AGENT_PROCESSES, "agent" => gone.clone()).set(0.0);
    }
    *reported = still;
}

pub fn describe_agent_metrics() {
    metrics::describe_gauge!(
        AGENT_MEMORY,
        metrics::Unit::Bytes,
        "Resident memory of the running process agents' process groups, by agent (shared pages count once per process)"
    );
    metrics::describe_gauge!(AGENT_PROCESSES, "Live processes in the running process agents' groups, by agent");
}

/// The system's page size in bytes (4096 when it cannot be read).
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |v| v as u64)
    })
}

/// The fields of `/proc/PID/stat` a sample needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupRss {
    state: char,
    pgid: i32,
    rss_pages: u64,
}

impl GroupRss {
    fn parse(stat: &str) -> Option<GroupRss> {
        // the command name is in parentheses and may contain spaces and ')': fields start after the last ')'
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let mut f = rest.split_ascii_whitespace();
        let state = f.next()?.chars().next()?; // field 3
        let pgid = f.nth(1)?.parse().ok()?; // field 5, after ppid
        let rss_pages = f.nth(18)?.parse().ok()?; // field 24, after fields 6..=23
        Some(GroupRss { state, pgid, rss_pages })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let cases = [
            (
                "4242 (sleep) S 4200 4242 4200 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 123456 2224128 131 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0",
                Some(GroupRss { state: 'S', pgid: 4242, rss_pages: 131 }),
            ),
            (
                "7 (a) b (c)) R 1 9 9 0 -1 0 0 0 0 0 5 6 0 0 20 0 3 0 99 1000 77 0",
                Some(GroupRss { state: 'R', pgid: 9, rss_pages: 77 }),
            ),
            ("8 (zombie) Z 1 8 8 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0", Some(GroupRss { state: 'Z', pgid: 8, rss_pages: 0 })),
            ("9 (cut) S 1 9 9 0", None),
            ("", None),
            ("no parenthesis at all", None),
        ];
        for (line, want) in cases {
            assert_eq!(GroupRss::parse(line), want, "{line}");
        }
    }

    #[test]
    fn this_process_parses_with_resident_pages() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = GroupRss::parse(&stat).expect("own stat parses");
        assert!(s.rss_pages > 0 && s.pgid > 0, "{s:?}");
        assert!(page_size() >= 4096);
    }
}
