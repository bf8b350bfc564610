//! `smith plan`: capacity and cost for N agents (see the smith-plan crate), printed or
//! emitted as deployment templates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use smith_plan::emit::{self, EmitOptions, Target};
use smith_plan::render::{render, Format};
use smith_plan::{Baseline, Model, Prices, Profile, Request};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The most agents running at once.
    #[arg(long, allow_negative_numbers = true)]
    agents: i64,
    /// dev, staging or prod (default: from --agents — up to 10 dev, up to 100 staging, else prod).
    #[arg(long)]
    profile: Option<String>,
    /// `seed`: the seed capacity plan's assumptions. `measured`: this project's benchmark
    /// output (--baseline; default the checked-in bench/baseline-2026-12-07.json, built in).
    #[arg(long, default_value = "seed")]
    model: String,
    /// The JSON `smith bench --scenario baseline --out FILE` wrote (for --model measured;
    /// default: the checked-in baseline, built in). The plan names the one it used.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Which measured executor the agents are (default: `claude-code` when the baseline has
    /// it, else the one using the most memory).
    #[arg(long)]
    executor: Option<String>,
    /// A price file like deploy/prices/us-east-1.toml (default: that file, built in).
    #[arg(long)]
    prices: Option<PathBuf>,
    /// table, json or markdown.
    #[arg(long, default_value = "table")]
    format: String,
    /// Also write the deployment for the plan into DIR: `cloudformation` (or `cfn`) or `k8s`
    /// (or `kubernetes`). The written files are listed on stderr.
    #[arg(long, num_args = 2, value_names = ["TARGET", "DIR"])]
    emit: Option<Vec<String>>,
    /// The deployment's name: stack and namespace, prefix of every named resource (a DNS-1123
    /// label of at most 40 characters).
    #[arg(long, requires = "emit", default_value = emit::DEFAULT_NAME)]
    name: String,
    /// The smith container image the deployment runs (default: ghcr.io/mistersmith/smith:VERSION).
    #[arg(long, requires = "emit")]
    image: Option<String>,
}

pub fn run(a: PlanArgs) -> Result<ExitCode> {
    let format = Format::parse(&a.format)?;
    // the target is checked before any work, so a typo writes nothing
    let emit_to = match a.emit.as_deref() {
        Some([target, dir]) => Some((Target::parse(target)?, PathBuf::from(dir))),
        Some(_) => unreachable!("clap takes exactly two values for --emit"),
        None => None,
    };
    let opts = EmitOptions { name: a.name, image: a.image.unwrap_or_else(emit::default_image) };
    let profile = a.profile.as_deref().map(Profile::parse).transpose()?;
    let model = Model::parse(&a.model)?;
    let prices = match &a.prices {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read price file {}", path.display()))?;
            Prices::parse(&text, &path.display().to_string())?
        }
        None => Prices::default(),
    };
    let baseline = match &a.baseline {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read baseline {}", path.display()))?;
            Some(Baseline::parse(&text, &path.display().to_string())?)
        }
        None => None,
    };
    let plan = smith_plan::plan(&Request { agents: a.agents, profile, model, baseline, executor: a.executor, prices })?;
    if let Some((target, dir)) = &emit_to {
        let written = emit::emit(&plan, *target, dir, &opts)?;
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    print!("{}", render(&plan, format));
    Ok(ExitCode::SUCCESS)
}
