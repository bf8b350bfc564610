//! `smith webhooks create|list|show|delete|deliveries|replay`: a tenant's subscriptions to its
//! events and their delivery logs, over the API (docs/webhooks.md).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use crate::client::Client;
use crate::keys::with_query;
use crate::ClientOpts;

#[derive(clap::Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Subscribe a URL to event kinds. Without --secret one is generated and printed once.
    Create {
        url: String,
        /// Comma-separated event kinds or patterns: task.succeeded,task.failed, task.*, *.
        #[arg(long, value_delimiter = ',', required = true)]
        kinds: Vec<String>,
        /// A Standard Webhooks secret, `whsec_<base64>`.
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List subscriptions (never their secrets).
    List,
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
    /// A subscription's deliveries, newest first.
    Deliveries {
        id: String,
        #[arg(long)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Send a failed delivery again.
    Replay {
        id: String,
        delivery: String,
    },
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_hook(h: &Value) {
    let kinds: Vec<&str> = h["kinds"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    println!(
        "{:<38} {:<12} {:<28} {:<40} {}",
        text(h, "id"),
        text(h, "tenant"),
        kinds.join(","),
        text(h, "url"),
        text(h, "created_at")
    );
}

pub async fn webhooks(cmd: WebhooksCommand, opts: ClientOpts) -> Result<ExitCode> {
    let c = Client::new(&opts)?;
    let header = || println!("{:<38} {:<12} {:<28} {:<40} CREATED", "ID", "TENANT", "KINDS", "URL");
    match cmd {
        WebhooksCommand::Create { url, kinds, secret, description } => {
            let body = json!({"url": url, "kinds": kinds, "secret": secret, "description": description});
            let v = c.post("/v1/webhooks", &body).await?;
            if opts.json {
                println!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            header();
            print_hook(&v);
            if let Some(s) = v["secret"].as_str() {
                println!("{s}");
                eprintln!("this secret is shown once: it signs the deliveries and is never served again");
            }
        }
        WebhooksCommand::List => {
            let v = c.get("/v1/webhooks").await?;
            if opts.json {
                println!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            header();
            for h in v["items"].as_array().into_iter().flatten() {
                print_hook(h);
            }
        }
        WebhooksCommand::Show { id } => {
            let v = c.get(&format!("/v1/webhooks/{}", encode(&id))).await?;
            if opts.json {
                println!("{v}");
            } else {
                header();
                print_hook(&v);
            }
        }
        WebhooksCommand::Delete { id } => {
            c.delete(&format!("/v1/webhooks/{}", encode(&id))).await?;
            if !opts.json {
                println!("deleted webhook {id}");
            }
        }
        WebhooksCommand::Deliveries { id, limit, cursor } => {
            let path = format!("/v1/webhooks/{}/deliveries", encode(&id));
            let v = c.get(&with_query(&path, &[("limit", limit.map(|l| l.to_string())), ("cursor", cursor)])).await?;
            if opts.json {
                println!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<38} {:<16} {:<10} {:>8} {:<7} {:<28} ERROR",
                "ID", "EVENT", "STATE", "ATTEMPTS", "STATUS", "NEXT"
            );
            for d in v["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<16} {:<10} {:>8} {:<7} {:<28} {}",
                    text(d, "id"),
                    text(d, "event_type"),
                    text(d, "state"),
                    text(d, "attempts"),
                    text(d, "last_status"),
                    text(d, "next_at"),
                    text(d, "last_error")
                );
            }
            if let Some(next) = v["next_cursor"].as_str() {
                eprintln!("more: --cursor {next}");
            }
        }
        WebhooksCommand::Replay { id, delivery } => {
            let v = c
                .post(&format!("/v1/webhooks/{}/deliveries/{}/replay", encode(&id), encode(&delivery)), &json!({}))
                .await?;
            if opts.json {
                println!("{v}");
            } else {
                println!("delivery {delivery} is pending again");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A path segment, percent-encoded.
pub(crate) fn encode(segment: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("a valid URL");
    url.path_segments_mut().expect("a base URL").push(segment);
    url.path().trim_start_matches('/').to_string()
}
