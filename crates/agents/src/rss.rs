//! Memory and CPU of running process agents: the resident memory and the CPU time of every
//! process in each agent's process group, summed by agent, as the gauges
//! `smith_agent_memory_bytes{agent}` and `smith_agent_processes{agent}`, and
//! `smith_agent_cpu_seconds_total{agent}`, which only grows (a counter in meaning, exported as
//! a gauge because the recorder's counters hold integers); `smith_agent_sample_timestamp_seconds`
//! says when they were sampled.
//!
//! [`run_group`](crate::process::run_group) registers each group it starts for as long as the
//! run lasts. A sample is one pass over `/proc`, whatever the number of groups: each process's
//! `stat` gives its group, its resident pages and its CPU time. Pages shared between the
//! processes of a group (a forked child's copy-on-write pages, shared libraries) count once per
//! process, as `ps` counts them: an upper bound, cheap to read, unlike PSS from `smaps_rollup`.
//! CPU counts what each process used since the previous sample (all of it when first seen), so
//! what a process uses between the last sample and its exit is missed: a lower bound, short by
//! at most one sample period of each process.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

pub const AGENT_MEMORY: &str = "smith_agent_memory_bytes";
pub const AGENT_PROCESSES: &str = "smith_agent_processes";
pub const AGENT_CPU: &str = "smith_agent_cpu_seconds_total";
pub const AGENT_SAMPLE_TIME: &str = "smith_agent_sample_timestamp_seconds";

/// Process groups of running agents: pgid → agent name.
static GROUPS: Mutex<Option<Groups>> = Mutex::new(None);
/// Agents given a nonzero value by the last sample, so that one gone since drops to 0.
static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
/// CPU ticks each live agent process had at the last sample, keyed by pid and start time (a
/// recycled pid is another process): a sample adds only the increase since.
static CPU_SEEN: Mutex<Option<HashMap<ProcessKey, u64>>> = Mutex::new(None);

/// A process, told apart from a later one with the same pid by its start time.
type ProcessKey = (i32, u64);
/// The registered process groups: pgid → agent name.
type Groups = HashMap<i32, Arc<str>>;

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

/// One process of a registered group, as a pass over `/proc` found it.
#[derive(Debug, Clone)]
struct Member {
    agent: Arc<str>,
    pid: i32,
    stat: GroupStat,
}

/// A copy of the registered groups and every process (zombies included) in them; `None` when
/// no group is registered (then `/proc` is not read at all).
fn scan() -> Option<(Groups, Vec<Member>)> {
    // a copy, so that runs starting and ending meanwhile do not wait for the scan
    let groups = match GROUPS.lock().expect("agent groups").as_ref() {
        Some(g) if !g.is_empty() => g.clone(),
        _ => return None,
    };
    let mut members = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            // a process that exits between the listing and the read is simply not counted
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let Some(stat) = GroupStat::parse(&stat) else { continue };
            let Some(agent) = groups.get(&stat.pgid) else { continue };
            members.push(Member { agent: agent.clone(), pid, stat });
        }
    }
    Some((groups, members))
}

/// Memory by agent, sorted by agent name: every registered agent has an entry; zombies hold
/// no memory and are not counted as processes.
fn memory_by_agent(groups: &Groups, members: &[Member]) -> Vec<AgentMemory> {
    let mut by_agent: HashMap<&str, AgentMemory> = HashMap::new();
    for agent in groups.values() {
        by_agent.entry(&**agent).or_insert_with(|| AgentMemory { agent: agent.to_string(), bytes: 0, processes: 0 });
    }
    let page = page_size();
    for m in members.iter().filter(|m| m.stat.state != 'Z') {
        let entry = by_agent.get_mut(&*m.agent).expect("every registered agent has an entry");
        entry.bytes += m.stat.rss_pages * page;
        entry.processes += 1;
    }
    let mut out: Vec<AgentMemory> = by_agent.into_values().collect();
    out.sort_by(|a, b| a.agent.cmp(&b.agent));
    out
}

/// The CPU ticks each agent's processes used since `seen` (a process not seen before: all of
/// its ticks), and what to remember for the next sample: only the processes alive now, so the
/// map is as large as the agents' processes are many. A zombie still shows its final CPU time
/// until it is reaped, so it counts too.
fn cpu_increase(
    seen: &HashMap<ProcessKey, u64>,
    members: &[Member],
) -> (HashMap<Arc<str>, u64>, HashMap<ProcessKey, u64>) {
    let mut added: HashMap<Arc<str>, u64> = HashMap::new();
    let mut next = HashMap::with_capacity(members.len());
    for m in members {
        let key = (m.pid, m.stat.start_ticks);
        let ticks = m.stat.cpu_ticks;
        let before = seen.get(&key).copied().unwrap_or(0);
        *added.entry(m.agent.clone()).or_default() += ticks.saturating_sub(before);
        next.insert(key, ticks.max(before));
    }
    (added, next)
}

/// The memory of every agent with a registered process group, sorted by agent name. An agent
/// whose group is registered but has no live process yet (or any more) has 0 of both.
/// Blocking: reads `/proc`.
pub fn agent_memory() -> Vec<AgentMemory> {
    match scan() {
        Some((groups, members)) => memory_by_agent(&groups, &members),
        None => Vec::new(),
    }
}

/// Samples the running agents' memory into the gauges, adds the CPU their processes used
/// since the last sample to `smith_agent_cpu_seconds_total`, and records when (a CPU rate
/// between two samples divides by the time between them, not by the time between scrapes).
/// An agent that had a memory value before and has no running group now is set to 0, so its
/// series drops instead of staying stale (its CPU total stays: it is a counter). Blocking: run
/// it in `spawn_blocking`.
pub fn sample_agent_memory() {
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let (groups, members) = scan().unwrap_or_default();
    metrics::gauge!(AGENT_SAMPLE_TIME).set(at);
    let now = memory_by_agent(&groups, &members);
    {
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
    let mut seen = CPU_SEEN.lock().expect("agent cpu");
    let (added, next) = cpu_increase(seen.get_or_insert_with(HashMap::new), &members);
    *seen = Some(next);
    let ticks = clock_ticks() as f64;
    let agents: HashSet<&Arc<str>> = groups.values().collect();
    for agent in agents {
        // every running agent gets its series, at 0 until it uses CPU, so that rate() sees the first increase
        let secs = added.get(agent).copied().unwrap_or(0) as f64 / ticks;
        metrics::gauge!(AGENT_CPU, "agent" => agent.to_string()).increment(secs);
    }
}

pub fn describe_agent_metrics() {
    metrics::describe_gauge!(
        AGENT_MEMORY,
        metrics::Unit::Bytes,
        "Resident memory of the running process agents' process groups, by agent (shared pages count once per process)"
    );
    metrics::describe_gauge!(AGENT_PROCESSES, "Live processes in the running process agents' groups, by agent");
    metrics::describe_gauge!(
        AGENT_SAMPLE_TIME,
        metrics::Unit::Seconds,
        "When the agents' memory and CPU were last sampled, in seconds since the Unix epoch"
    );
    // a gauge only because the recorder's counters hold integers: it never decreases
    metrics::describe_gauge!(
        AGENT_CPU,
        metrics::Unit::Seconds,
        "User and system CPU seconds used by the process agents' process groups, by agent (only grows)"
    );
}

/// The system's page size in bytes (4096 when it cannot be read).
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |v| v as u64)
    })
}

/// Clock ticks per second, the unit of CPU times in `/proc/PID/stat` (100 when it cannot be read).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|v| *v > 0)
            .map_or(100, |v| v as u64)
    })
}

/// The fields of `/proc/PID/stat` a sample needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupStat {
    state: char,
    pgid: i32,
    /// User plus system time, in clock ticks.
    cpu_ticks: u64,
    /// When the process started, in clock ticks since boot.
    start_ticks: u64,
    rss_pages: u64,
}

impl GroupStat {
    fn parse(stat: &str) -> Option<GroupStat> {
        // the command name is in parentheses and may contain spaces and ')': fields start after the last ')'
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        // fields[0] is field 3 of proc(5), the state
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).copied();
        let number = |n: usize| field(n).and_then(|v| v.parse::<u64>().ok());
        Some(GroupStat {
            state: field(3)?.chars().next()?,
            pgid: field(5)?.parse().ok()?,
            cpu_ticks: number(14)? + number(15)?,
            start_ticks: number(22)?,
            rss_pages: number(24)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let stat = |state, pgid, cpu_ticks, start_ticks, rss_pages| {
            Some(GroupStat { state, pgid, cpu_ticks, start_ticks, rss_pages })
        };
        let cases = [
            (
                "4242 (sleep) S 4200 4242 4200 0 -1 4194304 100 0 0 0 7 3 0 0 20 0 1 0 123456 2224128 131 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0",
                stat('S', 4242, 10, 123456, 131),
            ),
            ("7 (a) b (c)) R 1 9 9 0 -1 0 0 0 0 0 5 6 0 0 20 0 3 0 99 1000 77 0", stat('R', 9, 11, 99, 77)),
            ("8 (zombie) Z 1 8 8 0 -1 0 0 0 0 0 4 2 0 0 20 0 1 0 5 0 0 0", stat('Z', 8, 6, 5, 0)),
            ("9 (cut) S 1 9 9 0", None),
            ("", None),
            ("no parenthesis at all", None),
        ];
        for (line, want) in cases {
            assert_eq!(GroupStat::parse(line), want, "{line}");
        }
    }

    #[test]
    fn this_process_parses_with_resident_pages() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = GroupStat::parse(&stat).expect("own stat parses");
        assert!(s.rss_pages > 0 && s.pgid > 0 && s.start_ticks > 0, "{s:?}");
        assert!(page_size() >= 4096);
        assert!(clock_ticks() >= 1);
    }

    fn member(agent: &str, pid: i32, start_ticks: u64, cpu_ticks: u64) -> Member {
        Member {
            agent: Arc::from(agent),
            pid,
            stat: GroupStat { state: 'S', pgid: 1, cpu_ticks, start_ticks, rss_pages: 1 },
        }
    }

    #[test]
    fn cpu_counts_only_what_was_used_since_the_last_sample() {
        let seen: HashMap<ProcessKey, u64> = [((10, 100), 50), ((11, 100), 7), ((12, 100), 9), ((13, 5), 40)].into();
        let now = [
            member("a", 10, 100, 80), // used 30 more
            member("a", 11, 100, 7),  // idle
            member("a", 14, 300, 12), // new: all of it
            member("b", 12, 200, 3),  // pid 12 recycled: another process, all of it
            member("b", 15, 300, 0),  // new, no CPU yet
                                      // pid 13 exited: forgotten
        ];
        let (added, next) = cpu_increase(&seen, &now);
        assert_eq!(added.get("a").copied(), Some(42));
        assert_eq!(added.get("b").copied(), Some(3));
        let want: HashMap<ProcessKey, u64> =
            [((10, 100), 80), ((11, 100), 7), ((14, 300), 12), ((12, 200), 3), ((15, 300), 0)].into();
        assert_eq!(next, want);
        // the same reading again adds nothing, and a reading that went backwards neither
        let (again, _) = cpu_increase(&next, &now);
        assert!(again.values().all(|t| *t == 0), "{again:?}");
        let (back, kept) = cpu_increase(&next, &[member("a", 10, 100, 60)]);
        assert_eq!(back.get("a").copied(), Some(0));
        assert_eq!(kept.get(&(10, 100)).copied(), Some(80));
    }

    /// A busy process group, registered like `run_group` registers one, is charged its CPU.
    #[test]
    fn a_busy_group_is_charged_its_cpu() {
        use std::os::unix::process::CommandExt;
        let agent = "rss-test-spinner";
        let mut child =
            std::process::Command::new("sh").args(["-c", "while :; do :; done"]).process_group(0).spawn().unwrap();
        let _registration = register(child.id() as i32, agent);
        let sample = |seen: &HashMap<ProcessKey, u64>| {
            let (_, members) = scan().expect("a group is registered");
            let mine: Vec<Member> = members.into_iter().filter(|m| &*m.agent == agent).collect();
            assert_eq!(mine.len(), 1, "{mine:?}");
            let (added, next) = cpu_increase(seen, &mine);
            (added.get(agent).copied().unwrap_or(0), next)
        };
        std::thread::sleep(Duration::from_millis(500));
        let (first, seen) = sample(&HashMap::new());
        std::thread::sleep(Duration::from_millis(500));
        let (second, _) = sample(&seen);
        let memory = agent_memory();
        let _ = child.kill();
        let _ = child.wait();
        let ticks = clock_ticks();
        // a spinning shell gets a good share of a core even on a busy machine: at least 5% here
        assert!(first * 20 >= ticks / 2, "first sample: {first} ticks");
        assert!(second * 20 >= ticks / 2, "second sample: {second} ticks");
        let mine = memory.iter().find(|m| m.agent == agent).expect("sampled");
        assert!(mine.bytes > 0 && mine.processes == 1, "{mine:?}");
    }
}
