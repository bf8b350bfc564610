//! `smith keys create|list|revoke` and `smith audit`: the admin's commands, over the API.

use std::process::ExitCode;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::client::Client;
use crate::ClientOpts;

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key. Its secret is printed once and stored only as a hash.
    Create {
        /// The tenant the key acts for (default: yours; `*` is every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated: tasks:write, tasks:read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key: it stops working at once.
    Revoke { id: String },
}

/// `path?k=v&…` with the values percent-encoded; empty values left out.
pub(crate) fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
    if pairs.is_empty() {
        return path.to_string();
    }
    let url = reqwest::Url::parse_with_params(&format!("http://x{path}"), &pairs).expect("a valid path");
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

pub async fn keys(cmd: KeysCommand, opts: ClientOpts) -> Result<ExitCode> {
    let c = Client::new(&opts)?;
    match cmd {
        KeysCommand::Create { tenant, scopes, name } => {
            let v = c.post("/v1/keys", &json!({"tenant": tenant, "scopes": scopes, "name": name})).await?;
            if opts.json {
                println!("{v}");
            } else {
                let k = &v["key"];
                println!(
                    "key {} for tenant {} with scopes {}",
                    k["id"].as_str().unwrap_or(""),
                    k["tenant"].as_str().unwrap_or(""),
                    k["scopes"]
                );
                println!("{}", v["secret"].as_str().unwrap_or(""));
                eprintln!("this secret is shown once: the server keeps only its hash");
            }
        }
        KeysCommand::List { tenant } => {
            let v = c.get(&with_query("/v1/keys", &[("tenant", tenant)])).await?;
            if opts.json {
                println!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<14} {:<20} {:<32} {:<28} {:<28} NAME", "ID", "TENANT", "SCOPES", "CREATED", "REVOKED");
            for k in v["items"].as_array().into_iter().flatten() {
                let scopes: Vec<&str> =
                    k["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!(
                    "{:<14} {:<20} {:<32} {:<28} {:<28} {}",
                    k["id"].as_str().unwrap_or(""),
                    k["tenant"].as_str().unwrap_or(""),
                    scopes.join(","),
                    k["created_at"].as_str().unwrap_or(""),
                    k["revoked_at"].as_str().unwrap_or("-"),
                    k["name"].as_str().unwrap_or("")
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!("{id:?} is not a key id (the part after smk_ and before the next _)");
            }
            let v = c.post(&format!("/v1/keys/{id}/revoke"), &json!({})).await?;
            if opts.json {
                println!("{v}");
            } else {
                println!("revoked {} at {}", v["id"].as_str().unwrap_or(""), v["revoked_at"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[arg(long)]
    tenant: Option<String>,
    /// `key:<id>`, `token`, `jwt:<sub>`, `anonymous`, `unauthenticated`.
    #[arg(long)]
    actor: Option<String>,
    /// e.g. task.submit, task.cancel, session.start, key.create.
    #[arg(long)]
    action: Option<String>,
    /// RFC 3339 times.
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    /// Records after this id (the `next_after` of a previous page).
    #[arg(long)]
    after: Option<u64>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub async fn audit(a: AuditArgs, opts: ClientOpts) -> Result<ExitCode> {
    let c = Client::new(&opts)?;
    let path = with_query(
        "/v1/audit",
        &[
            ("tenant", a.tenant),
            ("actor", a.actor),
            ("action", a.action),
            ("since", a.since),
            ("until", a.until),
            ("after", a.after.map(|v| v.to_string())),
            ("limit", Some(a.limit.to_string())),
        ],
    );
    let v = c.get(&path).await?;
    if opts.json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6} {:<28} {:<22} {:<12} {:<15} {:<38} {:<22} STATUS",
        "ID", "AT", "ACTOR", "TENANT", "ACTION", "TARGET", "SOURCE"
    );
    for r in v["items"].as_array().into_iter().flatten() {
        println!(
            "{:>6} {:<28} {:<22} {:<12} {:<15} {:<38} {:<22} {}",
            r["id"],
            r["at"].as_str().unwrap_or(""),
            r["actor"].as_str().unwrap_or(""),
            r["tenant"].as_str().unwrap_or(""),
            r["action"].as_str().unwrap_or(""),
            r["target"].as_str().unwrap_or("-"),
            r["source"].as_str().unwrap_or(""),
            r["status"]
        );
    }
    if let Some(next) = v["next_after"].as_u64() {
        eprintln!("more: --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}
