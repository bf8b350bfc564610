//! The deployment of a [`Plan`]: a CloudFormation template for ECS on Fargate with Aurora
//! Serverless v2 and Amazon MQ for RabbitMQ ([`Target::CloudFormation`]), or Kubernetes
//! manifests with a KEDA autoscaler ([`Target::Kubernetes`]).
//!
//! Everything is computed before anything is written, and written deterministically: the same
//! plan and options give byte-identical files (keys sorted, fixed order), which is what keeps
//! the copies in `deploy/aws/` and `deploy/k8s/` checkable.

mod cfn;
mod cloudformation;
mod cloudwatch;
pub use cloudwatch::SEED_ALERTS;
mod ecs;
mod kubernetes;
mod text;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::model::{Plan, Service};
use crate::{Error, Result};

/// The stack name and Kubernetes namespace, and the prefix of every named resource.
pub const DEFAULT_NAME: &str = "mistersmith";
/// Longest `--name`: the longest derived name (`NAME-supervisor`, a broker's 50-character
/// limit less `-bus`) must still fit.
pub const MAX_NAME_LEN: usize = 40;

/// The gateway's API port, and the supervisor's and the worker's `/metrics` ports (their
/// defaults in `crates/smith/src/roles.rs`, here bound to every interface).
const API_PORT: u16 = 8080;
const SUPERVISOR_METRICS_PORT: u16 = 9464;
const WORKER_METRICS_PORT: u16 = 9465;
/// A worker's drain on SIGTERM (its default, inside Fargate Spot's two-minute notice), and
/// the bounded time every process takes to stop its components after it.
const WORKER_DRAIN_S: u64 = 110;
const STOP_S: u64 = 10;
/// The unprivileged user the containers run as.
const RUN_AS: u32 = 65532;
const CONFIG_DIR: &str = "/etc/smith";
const CONFIG_FILE: &str = "/etc/smith/smith.toml";
/// The worker's `--data-dir`: its record of running agent processes (`run/`) and the agents'
/// work directories (`work/`); the only place besides `/tmp` a container writes.
const DATA_DIR: &str = "/var/lib/smith";

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    CloudFormation,
    Kubernetes,
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        match s {
            "cloudformation" | "cfn" => Ok(Target::CloudFormation),
            "k8s" | "kubernetes" => Ok(Target::Kubernetes),
            other => Err(Error::Invalid(format!(
                "unknown --emit target `{other}`: expected cloudformation (or cfn) or k8s (or kubernetes)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Target::CloudFormation => "cloudformation",
            Target::Kubernetes => "k8s",
        }
    }
}

/// How the deployment is named and which image it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmitOptions {
    /// Stack and namespace name, prefix of every named resource: a DNS-1123 label of at most
    /// [`MAX_NAME_LEN`] characters.
    pub name: String,
    /// The container image whose entrypoint is the `smith` binary.
    pub image: String,
}

impl Default for EmitOptions {
    fn default() -> Self {
        EmitOptions { name: DEFAULT_NAME.to_string(), image: default_image() }
    }
}

/// `ghcr.io/mistersmith/smith:<this crate's version>`.
pub fn default_image() -> String {
    format!("ghcr.io/mistersmith/smith:{}", env!("CARGO_PKG_VERSION"))
}

/// The files of the deployment, by file name, without writing them.
pub fn files(plan: &Plan, target: Target, opts: &EmitOptions) -> Result<Vec<(String, String)>> {
    let fleet = Fleet::new(plan, opts)?;
    match target {
        Target::CloudFormation => cloudformation::files(&fleet),
        Target::Kubernetes => kubernetes::files(&fleet),
    }
}

/// Writes the deployment into `dir` (created if missing) and returns the paths written. A bad
/// name, image or plan is refused before anything is written.
pub fn emit(plan: &Plan, target: Target, dir: &Path, opts: &EmitOptions) -> Result<Vec<PathBuf>> {
    let files = files(plan, target, opts)?;
    let write_err = |path: &Path, source: std::io::Error| Error::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let mut written = Vec::with_capacity(files.len());
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| write_err(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// Whether `name` is a DNS-1123 label: lowercase letters, digits and `-`, starting and ending
/// with a letter or digit.
fn check_name(name: &str) -> Result<()> {
    let label = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err(Error::Invalid(format!(
            "--name `{name}` is not a DNS-1123 label: use lowercase letters, digits and `-`, starting and ending with a letter or digit"
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(Error::Invalid(format!(
            "--name `{name}` must start with a letter (it names the ECS cluster, the database and the broker)"
        )));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::Invalid(format!(
            "--name `{name}` is {} characters; at most {MAX_NAME_LEN}, so that the names derived from it fit AWS's limits",
            name.len()
        )));
    }
    Ok(())
}

fn check_image(image: &str) -> Result<()> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Invalid(format!("--image `{image}` is not an image reference")));
    }
    Ok(())
}

/// A role of the distributed deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Supervisor,
    Worker,
    Gateway,
}

impl Role {
    const ALL: [Role; 3] = [Role::Supervisor, Role::Worker, Role::Gateway];

    fn name(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Worker => "worker",
            Role::Gateway => "gateway",
        }
    }

    /// The port the container listens on: `/metrics` (and `/healthz`) for the supervisor and
    /// the worker, the API for the gateway.
    fn port(self) -> u16 {
        match self {
            Role::Supervisor => SUPERVISOR_METRICS_PORT,
            Role::Worker => WORKER_METRICS_PORT,
            Role::Gateway => API_PORT,
        }
    }

    /// Whether the role reads the gateway's token: the gateway requires it on a non-loopback
    /// address, workers hand it to agents for the gateway's MCP endpoint.
    fn needs_token(self) -> bool {
        matches!(self, Role::Worker | Role::Gateway)
    }

    /// Seconds from SIGTERM to a clean exit: the worker's drain plus the components' stop.
    fn stop_seconds(self) -> u64 {
        match self {
            Role::Worker => WORKER_DRAIN_S + STOP_S,
            Role::Supervisor | Role::Gateway => STOP_S,
        }
    }
}

/// The plan's services, checked, with what every emitter derives from them.
struct Fleet<'a> {
    plan: &'a Plan,
    name: &'a str,
    image: &'a str,
    supervisor: &'a Service,
    worker: &'a Service,
    gateway: &'a Service,
    agents_per_task: u64,
}

impl<'a> Fleet<'a> {
    fn new(plan: &'a Plan, opts: &'a EmitOptions) -> Result<Fleet<'a>> {
        check_name(&opts.name)?;
        check_image(&opts.image)?;
        let service = |name: &str| {
            plan.services
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::Invalid(format!("the plan has no `{name}` service")))
        };
        let fleet = Fleet {
            plan,
            name: &opts.name,
            image: &opts.image,
            supervisor: service("supervisor")?,
            worker: service("worker")?,
            gateway: service("gateway")?,
            agents_per_task: plan.autoscaling.agents_per_task,
        };
        let a = &plan.autoscaling;
        let bad = |what: String| Err(Error::Invalid(format!("cannot deploy this plan: {what}")));
        if fleet.agents_per_task == 0 {
            return bad("0 agents per worker task".into());
        }
        if a.worker_max_tasks == 0 || a.worker_min_tasks > a.worker_max_tasks {
            return bad(format!("worker tasks {}..{}", a.worker_min_tasks, a.worker_max_tasks));
        }
        if fleet.supervisor.tasks == 0 || fleet.gateway.tasks == 0 {
            return bad("no supervisor or no gateway task".into());
        }
        if !(0.0..=1.0).contains(&a.spot_share) {
            return bad(format!("Spot share {} is not in [0, 1]", a.spot_share));
        }
        let db = &plan.database;
        if !(db.min_acu >= 0.0 && db.min_acu <= db.max_acu) {
            return bad(format!("Aurora capacity {}..{} ACU", db.min_acu, db.max_acu));
        }
        Ok(fleet)
    }

    fn service(&self, role: Role) -> &'a Service {
        match role {
            Role::Supervisor => self.supervisor,
            Role::Worker => self.worker,
            Role::Gateway => self.gateway,
        }
    }

    /// `NAME-ROLE`: the Kubernetes Deployment and the Prometheus job of a role.
    fn job(&self, role: Role) -> String {
        format!("{}-{}", self.name, role.name())
    }

    /// The command line after `smith` (ECS `Command`, Kubernetes `args`).
    fn args(&self, role: Role) -> Vec<String> {
        let listen = |port: u16| format!("0.0.0.0:{port}");
        let args: Vec<String> = match role {
            Role::Supervisor => vec!["supervisor".into(), "--metrics-listen".into(), listen(role.port())],
            Role::Worker => vec![
                "worker".into(),
                "--max-agents".into(),
                self.agents_per_task.to_string(),
                "--metrics-listen".into(),
                listen(role.port()),
                "--data-dir".into(),
                DATA_DIR.into(),
                "--drain-timeout".into(),
                format!("{WORKER_DRAIN_S}s"),
            ],
            Role::Gateway => vec!["gateway".into(), "--listen".into(), listen(role.port())],
        };
        args
    }

    /// The `smith plan` command this deployment comes from.
    fn plan_command(&self) -> String {
        let p = self.plan;
        // the built-in baseline needs no --baseline to be used again
        let built_in = p.assumptions.iter().any(|a| a.name == "baseline" && a.source == "built in");
        let baseline = if built_in { "" } else { " --baseline FILE" };
        let model = match p.model {
            crate::Model::Seed => "seed".to_string(),
            crate::Model::Measured => match &p.executor {
                Some(e) => format!("measured{baseline} --executor {e}"),
                None => format!("measured{baseline}"),
            },
        };
        format!("smith plan --agents {} --profile {} --model {model}", p.agents, p.profile)
    }

    /// The fleet's agent slots, the bounds of the supervisor's autoscaler.
    fn slots(&self) -> (u64, u64) {
        let a = &self.plan.autoscaling;
        (a.worker_min_tasks * self.agents_per_task, a.worker_max_tasks * self.agents_per_task)
    }

    /// The role's `smith.toml`: its store pool from the plan, and the autoscaler's bounds for
    /// the supervisor.
    fn config_toml(&self, role: Role) -> String {
        let s = self.service(role);
        let mut t = String::new();
        let _ = writeln!(t, "# smith.toml of the {}s of `{}`, from `{}`.", role.name(), self.name, self.plan_command());
        let _ = writeln!(t, "# Generated: change the plan and regenerate (deploy/README.md) rather than edit.");
        let _ = writeln!(t, "\n[store]\n# connections each {} may open (the plan's pool per task)", role.name());
        let _ = writeln!(t, "pool_size = {}", s.pool_size);
        match role {
            Role::Supervisor => {
                let (min, max) = self.slots();
                let a = &self.plan.autoscaling;
                let _ = writeln!(
                    t,
                    "\n[scaling]\n# the fleet's agent slots: {}..{} worker tasks of {} agents",
                    a.worker_min_tasks, a.worker_max_tasks, self.agents_per_task
                );
                let _ = writeln!(t, "min_agents = {min}\nmax_agents = {max}");
                let _ = writeln!(t, "target_utilization = {}", a.target_utilization);
            }
            Role::Worker => {
                let _ = writeln!(
                    t,
                    "\n# Agent definitions ([agents.NAME]) go here; the built-ins echo, sleep, fail and stream are always there."
                );
            }
            Role::Gateway => {
                // A balancer that reuses a kept-alive connection just as the gateway closes it
                // answers 502: the gateway must outwait the balancer's own idle timeout.
                let lb = cloudformation::ALB_IDLE_TIMEOUT_S;
                let _ = writeln!(
                    t,
                    "\n[server]\n# longer than the load balancer's idle timeout ({lb} s on the AWS stack's ALB)"
                );
                let _ = writeln!(t, "idle_timeout = \"{}s\"", lb + 60);
            }
        }
        t
    }
}

/// Fargate's CPU units and MiB for a task of `vcpu` and `memory_gb`, when that is a size
/// Fargate offers.
fn fargate_size(s: &Service) -> Result<(u64, u64)> {
    let cpu = s.vcpu * 1024.0;
    let mem = s.memory_gb * 1024.0;
    let whole = |v: f64| v.fract() == 0.0 && v > 0.0;
    let (cpu, mem) = (cpu as u64, mem as u64);
    let ok = whole(s.vcpu * 1024.0)
        && whole(s.memory_gb * 1024.0)
        && match cpu {
            256 => [512, 1024, 2048].contains(&mem),
            512 => (1024..=4096).contains(&mem) && mem % 1024 == 0,
            1024 => (2048..=8192).contains(&mem) && mem % 1024 == 0,
            2048 => (4096..=16384).contains(&mem) && mem % 1024 == 0,
            4096 => (8192..=30720).contains(&mem) && mem % 1024 == 0,
            8192 => (16384..=61440).contains(&mem) && mem % 4096 == 0,
            16384 => (32768..=122880).contains(&mem) && mem % 8192 == 0,
            _ => false,
        };
    if !ok {
        return Err(Error::Invalid(format!(
            "the {} task's {} vCPU / {} GB is not a Fargate task size",
            s.name, s.vcpu, s.memory_gb
        )));
    }
    Ok((cpu, mem))
}

/// Kubernetes CPU quantity: whole cores as `2`, else millicores (`500m`).
pub fn cpu_quantity(vcpu: f64) -> String {
    let milli = (vcpu * 1000.0).round() as u64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Kubernetes memory quantity: `4Gi`, else `512Mi`.
pub fn memory_quantity(gb: f64) -> String {
    let mib = (gb * 1024.0).round() as u64;
    if mib % 1024 == 0 {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::seed_plan as seed;

    #[test]
    fn targets_parse_with_their_aliases() {
        for (s, t) in [
            ("cloudformation", Target::CloudFormation),
            ("cfn", Target::CloudFormation),
            ("k8s", Target::Kubernetes),
            ("kubernetes", Target::Kubernetes),
        ] {
            assert_eq!(Target::parse(s).unwrap(), t);
        }
        let err = Target::parse("terraform").unwrap_err().to_string();
        assert!(err.contains("terraform") && err.contains("cloudformation") && err.contains("k8s"), "{err}");
    }

    #[test]
    fn names_must_be_dns_labels() {
        for ok in ["mistersmith", "a", "smith-prod-2", &"a".repeat(MAX_NAME_LEN)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Smith", "-a", "a-", "a_b", "a.b", "2fast", "a b", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(matches!(check_name(bad), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn emitting_is_deterministic() {
        let p = seed(100);
        for target in [Target::CloudFormation, Target::Kubernetes] {
            let a = files(&p, target, &EmitOptions::default()).unwrap();
            let b = files(&p.clone(), target, &EmitOptions::default()).unwrap();
            assert_eq!(a, b);
            assert!(!a.is_empty());
        }
    }

    #[test]
    fn a_bad_name_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("smith-emit-{}", std::process::id()));
        let opts = EmitOptions { name: "Bad_Name".into(), ..EmitOptions::default() };
        let r = emit(&seed(10), Target::Kubernetes, &dir, &opts);
        assert!(matches!(r, Err(Error::Invalid(_))));
        assert!(!dir.exists());
    }

    #[test]
    fn quantities_and_fargate_sizes() {
        assert_eq!(cpu_quantity(0.5), "500m");
        assert_eq!(cpu_quantity(2.0), "2");
        assert_eq!(memory_quantity(1.0), "1Gi");
        assert_eq!(memory_quantity(0.5), "512Mi");
        let p = seed(10);
        let s = |vcpu: f64, memory_gb: f64| Service { vcpu, memory_gb, ..p.services[0].clone() };
        assert_eq!(fargate_size(&s(0.5, 1.0)).unwrap(), (512, 1024));
        assert_eq!(fargate_size(&s(2.0, 4.0)).unwrap(), (2048, 4096));
        assert!(fargate_size(&s(0.5, 5.0)).is_err());
        assert!(fargate_size(&s(3.0, 8.0)).is_err());
    }

    #[test]
    fn the_supervisor_config_bounds_the_fleet() {
        let p = seed(100);
        let opts = EmitOptions::default();
        let f = Fleet::new(&p, &opts).unwrap();
        let t = f.config_toml(Role::Supervisor);
        let (min, max) = f.slots();
        assert!(t.contains(&format!("min_agents = {min}\nmax_agents = {max}\n")), "{t}");
        assert!(t.contains(&format!("pool_size = {}\n", p.services[0].pool_size)), "{t}");
        let parsed: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(parsed["scaling"]["target_utilization"].as_float(), Some(p.autoscaling.target_utilization));
    }
}
