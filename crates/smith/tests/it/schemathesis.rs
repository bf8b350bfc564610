//! schemathesis (PyPI) against a live `smith up`: requests generated from the OpenAPI document
//! the server itself serves at `/v1/openapi.json` (examples, boundary values, random and
//! malformed data, and chains of calls linked by the ids they return) must never get a 5xx,
//! and every answer must match the document: a documented status, content type, headers and
//! body schema. Run twice: without a token (loopback) and with one, where requests without it
//! or with a wrong one must be refused with 401.
//!
//! The tool is found through `SMITH_TEST_SCHEMATHESIS` (.ci/run installs a pinned version in its
//! virtualenv) or `schemathesis` on `PATH`; without it the tests skip, except in CI.

use crate::common;

use common::{Opts, Smith};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Test cases per operation and phase: enough to reach every field's boundaries, few enough that
/// both runs finish in about a minute on two cores.
const MAX_EXAMPLES: &str = "250";
/// Hypothesis' seed: the same seed and the same server give the same requests.
const SEED: &str = "20260101";
/// The whole run, killed (and failed) after this.
const RUN_TIMEOUT: Duration = Duration::from_secs(420);

/// The server-sent-event streams, left out: `GET /v1/events` never ends (and may send no event
/// for a long while, so even reading a bounded number of events could wait forever), and a
/// task's stream ends only with its task, so a generated call would hang until the request
/// timeout instead of being checked. Their parameters are decoded by the same extractors as the
/// other operations' (`crates/gateway/tests/decode_props.rs` covers them), and the other tests
/// of this crate read the streams themselves.
const STREAMS: [&str; 2] = ["streamTaskEvents", "streamEvents"];

/// Every check schemathesis has runs, but for those that do not apply, with why:
/// - `positive_data_acceptance` (schema-valid data must be taken): some rules are about state
///   or about several fields at once, which a schema cannot say — a `parent_id` must name an
///   existing task, an agent must exist, a session's `timeout_ms` and `budget` need `input` —
///   and `GET /mcp` is documented to always answer 405.
/// - `negative_data_rejection` (schema-violating data must be refused) on `POST /mcp` only: it
///   is JSON-RPC, which answers a malformed message with a JSON-RPC error in a 200 (documented).
/// - without a token, `ignored_auth` and `missing_required_header`, and no request is made
///   without the `Authorization` header to see it refused: nothing is required then.
fn config(token: Option<&str>) -> String {
    let mut text = String::new();
    if token.is_none() {
        text.push_str("generation.with-security-parameters = false\n\n");
    }
    text.push_str("[checks]\npositive_data_acceptance.enabled = false\n");
    if token.is_none() {
        text.push_str("ignored_auth.enabled = false\nmissing_required_header.enabled = false\n");
    }
    text.push_str(
        "\n[[operations]]\ninclude-operation-id = \"callMcp\"\nchecks.negative_data_rejection.enabled = false\n",
    );
    text
}

/// schemathesis: `SMITH_TEST_SCHEMATHESIS`, else `schemathesis` on `PATH`; `None` (after saying
/// so) when neither is there outside CI.
fn schemathesis() -> Option<PathBuf> {
    let found =
        std::env::var_os("SMITH_TEST_SCHEMATHESIS").filter(|p| !p.is_empty()).map(PathBuf::from).or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).map(|dir| dir.join("schemathesis")).find(|p| p.is_file())
        });
    if found.is_none() {
        // CI sets the service URLs and installs schemathesis: there a missing one is a failure
        if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() {
            panic!("schemathesis not installed: set SMITH_TEST_SCHEMATHESIS or put schemathesis on PATH (PyPI)");
        }
        println!("skipped: schemathesis not installed (set SMITH_TEST_SCHEMATHESIS)");
    }
    found
}

/// Runs schemathesis against `smith` and fails with its report unless it found nothing.
async fn run(tool: &Path, smith: &Smith, token: Option<&str>) {
    let config_path = smith.dir().join("schemathesis.toml");
    std::fs::write(&config_path, config(token)).expect("write schemathesis.toml");
    let schema = smith.url("/v1/openapi.json");
    let mut cmd = tokio::process::Command::new(tool);
    cmd.arg("--no-color").arg("--config-file").arg(&config_path).args(["run", &schema]);
    for op in STREAMS {
        cmd.args(["--exclude-operation-id", op]);
    }
    // One worker: two cores are shared with the server, and schemathesis 4.32's threaded
    // generation can trip a CPython 3.11 `ast` recursion error on the recursive MCP schema.
    cmd.args(["--workers", "1", "--max-examples", MAX_EXAMPLES, "--seed", SEED]);
    cmd.args(["--request-timeout", "30", "--generation-database", "none"]);
    if let Some(t) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {t}")]);
    }
    // crash files and caches go to the test's temp dir; loopback never goes through a proxy
    cmd.current_dir(smith.dir()).env("NO_PROXY", "127.0.0.1,localhost").env("no_proxy", "127.0.0.1,localhost");
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mode = if token.is_some() { "with a token" } else { "without a token" };
    assert!(out.status.success(), "schemathesis ({mode}) found problems ({}):\n{text}", out.status);
    // it really tested: every selected operation, none left out by an error
    let selected = count_after(&text, "Selected: ");
    let tested = count_after(&text, "Tested: ");
    assert!(
        selected.is_some_and(|n| n >= 10) && selected == tested,
        "schemathesis ({mode}) tested too little:\n{text}"
    );
    let summary = text.lines().rev().find(|l| l.contains(" in ") && l.starts_with('=')).unwrap_or_default();
    println!("schemathesis {mode}: {} operations, {summary} ({:?})", tested.unwrap_or(0), started.elapsed());
}

/// The number that follows `label` on its line (`Selected: 16/18` → 16).
fn count_after(text: &str, label: &str) -> Option<usize> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_generated_requests_as_documented_without_a_token() {
    let Some(tool) = schemathesis() else { return };
    let smith = Smith::start(Opts::new()).await;
    run(&tool, &smith, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_generated_requests_as_documented_with_a_token() {
    let Some(tool) = schemathesis() else { return };
    let token = "schemathesis-token";
    let smith = Smith::start(Opts::new().token(token)).await;
    run(&tool, &smith, Some(token)).await;
}
