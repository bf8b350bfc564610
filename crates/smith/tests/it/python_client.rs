//! The Python client (`clients/python`, package `mistersmith`) against this build's binary:
//! its pytest suite starts `smith up` itself (through `SMITH_BIN`) and drives every part of
//! the API through the sync and asyncio clients — tasks, a stream followed across a SIGTERM
//! restart, sessions, errors and credentials — checks that the client covers every operation
//! of the served OpenAPI document, and runs `mypy --strict` on the package.
//!
//! The interpreter is `SMITH_TEST_PYTHON`: a virtualenv's python with the client's test
//! dependencies (.ci/run makes one; the package itself is read from `clients/python/src`, so
//! edits need no reinstall). Without it the test skips, except in CI.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The whole suite, killed (and failed) after this: it takes under a minute on two cores.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Fewer passed tests than this means the suite did not really run.
const MIN_PASSED: usize = 40;

/// `SMITH_TEST_PYTHON`; `None` (after saying so) when it is unset outside CI.
fn python() -> Option<PathBuf> {
    match std::env::var("SMITH_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => {
            assert!(Path::new(&p).is_file(), "SMITH_TEST_PYTHON={p} is not a file (.ci/run makes the virtualenv)");
            Some(PathBuf::from(p))
        }
        // CI sets the service URLs and makes the virtualenv: there a missing one is a failure
        _ if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() => {
            panic!("SMITH_TEST_PYTHON not set: a virtualenv's python with clients/python[test] installed (.ci/run)")
        }
        _ => {
            println!("skipped: SMITH_TEST_PYTHON not set (a virtualenv's python with clients/python[test] installed)");
            None
        }
    }
}

/// The number before `label` in pytest's closing line (`58 passed in 21.9s` → 58).
fn count_before(summary: &str, label: &str) -> usize {
    let words: Vec<&str> = summary.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect();
    words.windows(2).find(|w| w[1] == label).and_then(|w| w[0].parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_suite_passes_against_smith_up() {
    let Some(python) = python() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let client = root.join("clients/python");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-m", "pytest", "clients/python/tests", "-q", "-rfEs", "-p", "no:cacheprovider"]);
    cmd.current_dir(&root).env("SMITH_BIN", common::BIN).env("PYTHONPATH", client.join("src"));
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for k in common::SMITH_ENV.iter().chain(&["MISTERSMITH_URL", "MISTERSMITH_API_KEY"]) {
        cmd.env_remove(k);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the Python client's suite did not finish within {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client's suite failed ({}):\n{text}", out.status);
    let summary = text.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default().to_string();
    let passed = count_before(&summary, "passed");
    assert!(passed >= MIN_PASSED, "the Python client's suite ran too little ({passed} passed):\n{text}");
    assert_eq!(count_before(&summary, "skipped"), 0, "the Python client's suite skipped tests:\n{text}");
    println!("python client: {summary} ({:?})", started.elapsed());
}
