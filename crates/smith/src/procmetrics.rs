//! Process metrics of this node — CPU, memory, file descriptors, threads, start time — and the
//! CPU and memory it may use, read from `/proc/self` and the cgroup files (Linux).
//!
//! A value that cannot be read is not set: on another OS, or where `/proc` is hidden, the
//! metrics are simply absent.

use std::path::{Path, PathBuf};

pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub const OPEN_FDS: &str = "process_open_fds";
pub const MAX_FDS: &str = "process_max_fds";
pub const THREADS: &str = "process_threads";
pub const START_TIME: &str = "process_start_time_seconds";
pub const CPU_LIMIT: &str = "smith_node_cpu_limit";
pub const MEMORY_LIMIT: &str = "smith_node_memory_limit_bytes";

/// The process's figures as Prometheus text, read now (at scrape time; a few small files).
/// Written by hand rather than through the metrics recorder because its counters are
/// integers, and CPU seconds are not.
pub fn render() -> String {
    Snapshot::read().to_text()
}

/// One reading; `None` where the value could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub cpu_limit: Option<f64>,
    pub memory_limit_bytes: Option<u64>,
}

impl Snapshot {
    pub fn read() -> Snapshot {
        let mut s = Snapshot::default();
        let ticks = sysconf(nix::unistd::SysconfVar::CLK_TCK);
        let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE);
        if let Some(stat) = read("/proc/self/stat").as_deref().and_then(parse_stat) {
            s.virtual_bytes = Some(stat.vsize_bytes);
            s.threads = Some(stat.threads);
            s.resident_bytes = page.map(|p| stat.rss_pages * p);
            if let Some(ticks) = ticks.filter(|t| *t > 0) {
                s.cpu_seconds = Some((stat.utime_ticks + stat.stime_ticks) as f64 / ticks as f64);
                let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
                s.start_time_seconds = boot.map(|b| b as f64 + stat.start_ticks as f64 / ticks as f64);
            }
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        s.max_fds = match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => Some(soft),
            _ => None,
        };
        let cgroups = read("/proc/self/cgroup").unwrap_or_default();
        s.cpu_limit =
            cgroup_cpu_limit(&cgroups).or_else(|| std::thread::available_parallelism().ok().map(|n| n.get() as f64));
        let total = read("/proc/meminfo").as_deref().and_then(parse_mem_total);
        s.memory_limit_bytes = match (cgroup_memory_limit(&cgroups), total) {
            // a cgroup limit above the machine's memory limits nothing
            (Some(limit), Some(total)) => Some(limit.min(total)),
            (limit, total) => limit.or(total),
        };
        s
    }

    fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: Option<f64>| {
            if let Some(v) = v {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
            }
        };
        let f = |v: Option<u64>| v.map(|v| v as f64);
        put(CPU_SECONDS, "counter", "User and system CPU time spent by this process, in seconds", self.cpu_seconds);
        put(RESIDENT_MEMORY, "gauge", "Resident memory of this process, in bytes", f(self.resident_bytes));
        put(VIRTUAL_MEMORY, "gauge", "Virtual memory of this process, in bytes", f(self.virtual_bytes));
        put(OPEN_FDS, "gauge", "Open file descriptors of this process", f(self.open_fds));
        put(MAX_FDS, "gauge", "Soft limit on this process's open file descriptors", f(self.max_fds));
        put(THREADS, "gauge", "Threads of this process", f(self.threads));
        put(START_TIME, "gauge", "When this process started, in seconds since the Unix epoch", self.start_time_seconds);
        put(
            CPU_LIMIT,
            "gauge",
            "CPUs this process may use: its cgroup's CPU quota, else the CPUs available to it",
            self.cpu_limit,
        );
        put(
            MEMORY_LIMIT,
            "gauge",
            "Memory this process may use, in bytes: its cgroup's limit, else the machine's memory",
            f(self.memory_limit_bytes),
        );
        out
    }
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn sysconf(var: nix::unistd::SysconfVar) -> Option<u64> {
    nix::unistd::sysconf(var).ok().flatten().and_then(|v| u64::try_from(v).ok())
}

/// The fields of `/proc/PID/stat` the metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    threads: u64,
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: u64,
}

fn parse_stat(stat: &str) -> Option<Stat> {
    // the command name is in parentheses and may hold spaces and ')': fields start after the last ')'
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // fields[0] is field 3 of proc(5), the state
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// Boot time in seconds since the epoch: the `btime` line of `/proc/stat`.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// cgroup v2 `cpu.max` ("QUOTA PERIOD", or "max PERIOD" when unlimited) as CPUs.
fn parse_cpu_max(cpu_max: &str) -> Option<f64> {
    let mut f = cpu_max.split_ascii_whitespace();
    let quota: f64 = f.next()?.parse().ok()?;
    let period: f64 = f.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` as CPUs; a quota of -1 is unlimited.
fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// cgroup v2 `memory.max` or v1 `memory.limit_in_bytes`: a number, or "max" when unlimited
/// (v1 writes unlimited as a huge number, which the cap by the machine's memory takes care of).
fn parse_memory_max(max: &str) -> Option<u64> {
    max.trim().parse().ok()
}

/// This process's cgroup path in `/proc/self/cgroup`: the v2 one (`0::PATH`) when
/// `controller` is `None`, else the v1 hierarchy that has the controller.
fn cgroup_path<'a>(cgroups: &'a str, controller: Option<&str>) -> Option<&'a str> {
    cgroups.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (_id, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let hit = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        hit.then_some(path)
    })
}

/// The cgroup's directory under `root` and its ancestors up to `root`: a limit anywhere above
/// applies too. Inside a cgroup namespace the path is `/` and `root` is the group itself.
fn cgroup_dirs(root: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut dir = root.join(path.trim_start_matches('/'));
    while dir.starts_with(root) {
        dirs.push(dir.clone());
        if !dir.pop() {
            break;
        }
    }
    dirs
}

/// The tightest limit found in `file` of the cgroup's directories (v2, then v1 `controller`).
fn tightest<T: PartialOrd + Copy>(
    cgroups: &str,
    controller: &str,
    v2: impl Fn(&Path) -> Option<T>,
    v1: impl Fn(&Path) -> Option<T>,
) -> Option<T> {
    let mut best: Option<T> = None;
    let mut consider = |v: Option<T>| {
        if let Some(v) = v {
            best = Some(match best {
                Some(b) if b <= v => b,
                _ => v,
            });
        }
    };
    if let Some(path) = cgroup_path(cgroups, None) {
        for dir in cgroup_dirs(Path::new("/sys/fs/cgroup"), path) {
            consider(v2(&dir));
        }
    }
    if let Some(path) = cgroup_path(cgroups, Some(controller)) {
        for dir in cgroup_dirs(&Path::new("/sys/fs/cgroup").join(controller), path) {
            consider(v1(&dir));
        }
    }
    best
}

fn cgroup_cpu_limit(cgroups: &str) -> Option<f64> {
    tightest(
        cgroups,
        "cpu",
        |dir| parse_cpu_max(&read(dir.join("cpu.max"))?),
        |dir| parse_cfs(&read(dir.join("cpu.cfs_quota_us"))?, &read(dir.join("cpu.cfs_period_us"))?),
    )
}

fn cgroup_memory_limit(cgroups: &str) -> Option<u64> {
    tightest(
        cgroups,
        "memory",
        |dir| parse_memory_max(&read(dir.join("memory.max"))?),
        |dir| parse_memory_max(&read(dir.join("memory.limit_in_bytes"))?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_the_command_name() {
        let line = "4242 (smith (node) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1048576000 3000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let want = Stat {
            utime_ticks: 250,
            stime_ticks: 75,
            threads: 9,
            start_ticks: 123456,
            vsize_bytes: 1_048_576_000,
            rss_pages: 3000,
        };
        assert_eq!(parse_stat(line), Some(want));
        assert_eq!(parse_stat("4242 (cut short) S 1 4242 4242 0 -1 4194560 2000"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn boot_time_and_total_memory() {
        let stat = "cpu  1 2 3 4\ncpu0 1 2 3 4\nintr 5\nctxt 9\nbtime 1700000000\nprocesses 77\n";
        assert_eq!(parse_boot_time(stat), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1 2\n"), None);
        let meminfo = "MemTotal:       16318480 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(16_318_480 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn cgroup_limits() {
        let cpu = [("max 100000\n", None), ("150000 100000\n", Some(1.5)), ("200000 50000", Some(4.0)), ("junk", None)];
        for (text, want) in cpu {
            assert_eq!(parse_cpu_max(text), want, "{text:?}");
        }
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some(0.5));
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("536870912\n"), Some(536_870_912));
    }

    #[test]
    fn own_cgroup_paths() {
        let v2 = "0::/system.slice/smith.service\n";
        assert_eq!(cgroup_path(v2, None), Some("/system.slice/smith.service"));
        assert_eq!(cgroup_path(v2, Some("memory")), None);
        let hybrid = "4:memory:/pod/abc\n3:cpu,cpuacct:/pod\n1:name=systemd:/\n0::/\n";
        assert_eq!(cgroup_path(hybrid, None), Some("/"));
        assert_eq!(cgroup_path(hybrid, Some("memory")), Some("/pod/abc"));
        assert_eq!(cgroup_path(hybrid, Some("cpu")), Some("/pod"));
        assert_eq!(cgroup_path(hybrid, Some("pids")), None);

        let root = Path::new("/sys/fs/cgroup");
        let dirs = |p| cgroup_dirs(root, p);
        assert_eq!(dirs("/"), [root]);
        assert_eq!(dirs("/a/b"), [root.join("a/b"), root.join("a"), root.to_path_buf()]);
    }

    #[test]
    fn this_process_reads_sanely() {
        let s = Snapshot::read();
        assert!(s.resident_bytes.is_some_and(|b| b > 0), "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.threads.is_some_and(|t| t >= 1), "{s:?}");
        assert!(s.open_fds.is_some_and(|n| n >= 3), "{s:?}");
        assert!(s.max_fds.is_none_or(|m| m >= s.open_fds.unwrap()), "{s:?}");
        assert!(s.cpu_seconds.is_some_and(|c| c >= 0.0), "{s:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        // started before now, and not long before (tests run right after the binary starts)
        assert!(s.start_time_seconds.is_some_and(|t| t <= now + 1.0 && t > now - 3600.0), "{s:?} now {now}");
        assert!(s.cpu_limit.is_some_and(|c| c >= 1.0), "{s:?}");
        assert!(s.memory_limit_bytes.is_some_and(|m| m >= s.resident_bytes.unwrap()), "{s:?}");
        let text = s.to_text();
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.contains("# TYPE smith_node_cpu_limit gauge\n"), "{text}");
        assert_eq!(text.matches("# TYPE ").count(), 9, "{text}");
    }
}
