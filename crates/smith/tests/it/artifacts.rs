//! Artifacts (docs/artifacts.md): the files a `process` agent leaves in `$SMITH_ARTIFACTS` are
//! stored when its attempt ends, listed at `GET /v1/tasks/{id}/artifacts`, downloaded byte for
//! byte over HTTP and with `smith task artifacts ID --out DIR`, walled by tenant, held to their
//! caps — on `smith up` (its data directory), across a distributed worker and gateway sharing a
//! `file://` URL, and in an S3 bucket (a real `moto_server`, signed with SigV4).

use crate::common::cluster::{Cluster, Role, Services};
use crate::common::{self, Api, Opts, Smith};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const ROOT: &str = "root-token-for-artifacts-0123456789";

/// What the `artist` agent writes, by its input: `files` a nested text file, the binary file
/// `$SOURCE`, an empty file, a name with a space and a non-ASCII letter, and a link to the
/// file `$SECRET` outside; `big` 3,000 bytes; `many` four files; `tenant` 600 bytes; `slow` one
/// file, then a long sleep; `retry` `keep.txt` naming its attempt, and on the first attempt
/// `first-only.txt` too, then fails.
const ARTIST: &str = r#"set -e
A="$SMITH_ARTIFACTS"
case "$(cat)" in
  files)
    mkdir -p "$A/out/deep"
    printf 'report of %s\n' "$SMITH_TASK_ID" > "$A/out/deep/report.txt"
    cp "$SOURCE" "$A/data.bin"
    : > "$A/empty"
    printf 'spaced' > "$A/naïve name.txt"
    ln -s "$SECRET" "$A/stolen"
    ;;
  big) head -c 3000 /dev/zero > "$A/big.bin" ;;
  many) for i in 1 2 3 4; do echo "$i" > "$A/f$i"; done ;;
  tenant) head -c 600 /dev/zero > "$A/t.bin" ;;
  slow) echo partial > "$A/partial.txt"; echo written; sleep 30 ;;
  retry)
    echo "attempt $SMITH_ATTEMPT" > "$A/keep.txt"
    if [ "$SMITH_ATTEMPT" = 1 ]; then echo early > "$A/first-only.txt"; exit 3; fi
    ;;
esac
echo done
"#;

/// The files the agent reads: binary bytes to store, and a secret it must not get stored.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Inputs {
        let dir = tempfile::tempdir().expect("temp dir");
        // every byte value, then a pseudo-random tail: 70,000 bytes in all
        let mut bytes: Vec<u8> = (0..=255u8).collect();
        let mut x: u32 = 0x2545_f491;
        while bytes.len() < 70_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.push(x as u8);
        }
        std::fs::write(dir.path().join("source.bin"), &bytes).expect("write source");
        std::fs::write(dir.path().join("secret"), "root:$6$not-for-you").expect("write secret");
        Inputs { dir }
    }

    fn source(&self) -> PathBuf {
        self.dir.path().join("source.bin")
    }

    fn agent(&self) -> String {
        format!(
            "[agents.artist]\nexecutor = \"process\"\ncommand = \"sh\"\nargs = [\"-c\", '''{ARTIST}''']\n\
             env = {{ SOURCE = \"{}\", SECRET = \"{}\" }}\n",
            self.source().display(),
            self.dir.path().join("secret").display()
        )
    }
}

/// A name as a URL path: each component percent-encoded.
fn path_of(id: &str, name: &str) -> String {
    let enc = |part: &str| -> String {
        part.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let parts: Vec<String> = name.split('/').map(enc).collect();
    format!("/v1/tasks/{id}/artifacts/{}", parts.join("/"))
}

/// GET an artifact: status, headers and bytes.
async fn download(api: &Api, id: &str, name: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = api.request(reqwest::Method::GET, &path_of(id, name)).send().await.expect("GET artifact");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.expect("artifact body").to_vec())
}

fn sha256(path: &Path) -> String {
    smith_artifacts::sha256_file(path).expect("hash").1
}

fn names(list: &Value) -> Vec<String> {
    list["artifacts"].as_array().expect("artifacts").iter().map(|a| a["name"].as_str().unwrap().to_string()).collect()
}

/// Runs the `files` task and checks what is listed, served and said about it; returns its id.
async fn files_are_stored_and_served(api: &Api, inputs: &Inputs) -> String {
    let (id, t) = api.run(json!({"agent": "artist", "input": "files"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    let (status, list) = api.get(&format!("/v1/tasks/{id}/artifacts")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(names(&list), ["data.bin", "empty", "naïve name.txt", "out/deep/report.txt"], "{list}");
    let report = format!("report of {id}\n");
    let want: [(&str, Vec<u8>); 4] = [
        ("data.bin", std::fs::read(inputs.source()).unwrap()),
        ("empty", Vec::new()),
        ("naïve name.txt", b"spaced".to_vec()),
        ("out/deep/report.txt", report.into_bytes()),
    ];
    let scratch = tempfile::tempdir().unwrap();
    for ((name, bytes), listed) in want.iter().zip(list["artifacts"].as_array().unwrap()) {
        std::fs::write(scratch.path().join("x"), bytes).unwrap();
        let hash = sha256(&scratch.path().join("x"));
        assert_eq!(listed["size"], bytes.len(), "{name}: {listed}");
        assert_eq!(listed["sha256"], hash.as_str(), "{name}");
        assert!(listed["created_at"].as_str().is_some_and(|s| s.ends_with('Z')), "{listed}");
        let (status, headers, got) = download(api, &id, name).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&got));
        assert!(got == *bytes, "{name}: the bytes served differ from the agent's");
        assert_eq!(headers["content-type"], "application/octet-stream");
        assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
        assert_eq!(headers["x-smith-sha256"], hash.as_str());
        let disposition = headers["content-disposition"].to_str().unwrap();
        assert!(disposition.starts_with("attachment; filename=\""), "{disposition}");
    }
    // the link to a file outside was not followed: not stored, and said so
    let (status, _, body) = download(api, &id, "stolen").await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(!String::from_utf8_lossy(&body).contains("not-for-you"));
    for bad in ["../secret", "nothing-here", "out"] {
        assert_eq!(download(api, &id, bad).await.0, 404, "{bad}");
    }
    let frames = api.events(&id, WAIT).await;
    let stored: Vec<Value> =
        frames.iter().filter(|f| f.event == "artifacts.stored").map(|f| f.json()["data"].clone()).collect();
    assert_eq!(stored.len(), 1, "{frames:?}");
    assert_eq!(stored[0]["count"], 4);
    assert_eq!(stored[0]["bytes"], 70_000 + 6 + format!("report of {id}\n").len());
    assert_eq!(stored[0]["skipped"][0]["name"], "stolen", "{}", stored[0]);
    assert!(stored[0]["skipped"][0]["why"].as_str().unwrap().contains("symbolic link"));
    let kinds = common::kinds(&frames);
    assert_eq!(kinds[kinds.len() - 2..], ["artifacts.stored", "task.succeeded"], "stored with the outcome");
    id
}

async fn key(root: &Api, tenant: &str) -> Api {
    let (status, body) =
        root.post("/v1/keys", &json!({"tenant": tenant, "scopes": ["tasks:write", "tasks:read"]})).await;
    assert_eq!(status, 201, "create key: {body}");
    Api::new(&root.base, Some(body["secret"].as_str().expect("secret").to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_are_stored_listed_downloaded_and_walled_by_tenant() {
    let inputs = Inputs::new();
    let smith = Smith::start(Opts::new().token(ROOT).config(&inputs.agent())).await;
    let root = smith.api();
    let (acme, globex) = (key(&root, "acme").await, key(&root, "globex").await);
    let id = files_are_stored_and_served(&acme, &inputs).await;
    // in smith up's data directory, keyed by tenant and task
    let stored = smith.data_dir().join("artifacts/acme").join(&id).join("data.bin");
    assert_eq!(std::fs::read(&stored).unwrap(), std::fs::read(inputs.source()).unwrap());

    // another tenant: 404 on the list and on every file, as for a missing task
    for path in [format!("/v1/tasks/{id}/artifacts"), path_of(&id, "data.bin"), path_of(&id, "out/deep/report.txt")] {
        let (status, body) = globex.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
        assert!(!body.to_string().contains("report of"), "{body}");
    }
    // a task with no artifact lists none
    let (other, _) = acme.run(json!({"agent": "echo", "input": "x"}), WAIT).await;
    let (status, list) = acme.get(&format!("/v1/tasks/{other}/artifacts")).await;
    assert_eq!((status.as_u16(), list), (200, json!({"artifacts": []})));

    // the CLI lists them and downloads them all into a directory, byte for byte
    let server = root.url("");
    let key_of = |api: &Api| api.token.clone().unwrap();
    let acme_key = key_of(&acme);
    let (code, out, err) =
        common::cli(&["--server", &server, "--token", &acme_key, "task", "artifacts", &id], WAIT).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("data.bin") && out.contains("out/deep/report.txt") && out.contains("70000"), "{out}");
    let into = tempfile::tempdir().unwrap();
    let dir = into.path().join("fresh");
    let dir_arg = dir.display().to_string();
    let args = ["--server", &server, "--token", &acme_key, "task", "artifacts", &id, "--out", &dir_arg];
    let (code, out, err) = common::cli(&args, WAIT).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read(dir.join("data.bin")).unwrap(), std::fs::read(inputs.source()).unwrap());
    assert_eq!(std::fs::read_to_string(dir.join("out/deep/report.txt")).unwrap(), format!("report of {id}\n"));
    assert_eq!(std::fs::read(dir.join("empty")).unwrap(), b"");
    assert_eq!(std::fs::read(dir.join("naïve name.txt")).unwrap(), b"spaced");
    assert!(!dir.join("stolen").exists());
    // another tenant's CLI gets the 404 too
    let globex_key = key_of(&globex);
    let args = ["--server", &server, "--token", &globex_key, "task", "artifacts", &id, "--out", &dir_arg];
    let (code, _, err) = common::cli(&args, WAIT).await;
    assert!(code != 0 && err.contains("404"), "{code} {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_or_tenant_over_its_artifact_cap_fails_and_stores_nothing() {
    let inputs = Inputs::new();
    let caps = "[artifacts]\nmax_task_bytes = 800\nmax_task_files = 3\nmax_tenant_bytes = 1000\n\n";
    let smith = Smith::start(Opts::new().config(&format!("{caps}{}", inputs.agent()))).await;
    let api = smith.api();
    for (input, why) in [("big", "3000 bytes, over its cap of 800"), ("many", "more than 3 files")] {
        let (id, t) = api.run(json!({"agent": "artist", "input": input, "max_attempts": 3}), WAIT).await;
        assert_eq!(t["status"], "failed", "{input}: {t:#}");
        assert_eq!(t["error"]["code"], "artifacts_too_large", "{input}: {t:#}");
        assert!(t["error"]["message"].as_str().unwrap().contains(why), "{input}: {t:#}");
        assert_eq!(t["attempt"], 1, "{input}: never retried");
        let (_, list) = api.get(&format!("/v1/tasks/{id}/artifacts")).await;
        assert_eq!(list, json!({"artifacts": []}), "{input}: nothing partial is recorded");
    }
    // the tenant: 600 bytes fit its 1,000, the next 600 do not
    let (first, t) = api.run(json!({"agent": "artist", "input": "tenant"}), WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert_eq!(names(&api.get(&format!("/v1/tasks/{first}/artifacts")).await.1), ["t.bin"]);
    let (second, t) = api.run(json!({"agent": "artist", "input": "tenant"}), WAIT).await;
    assert_eq!(
        (t["status"].as_str(), t["error"]["code"].as_str()),
        (Some("failed"), Some("artifacts_too_large")),
        "{t:#}"
    );
    assert!(t["error"]["message"].as_str().unwrap().contains("max_tenant_bytes"), "{t:#}");
    assert_eq!(api.get(&format!("/v1/tasks/{second}/artifacts")).await.1, json!({"artifacts": []}));
    let dir = smith.data_dir().join("artifacts/default");
    let stored: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(stored, [std::ffi::OsString::from(&first)], "only the task within its caps has bytes stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_attempts_file_replaces_the_earlier_one_of_its_name() {
    let inputs = Inputs::new();
    let smith = Smith::start(Opts::new().config(&format!("{}retry_backoff = \"10ms\"\n", inputs.agent()))).await;
    let api = smith.api();
    let (id, t) = api.run(json!({"agent": "artist", "input": "retry", "max_attempts": 2}), WAIT).await;
    assert_eq!((t["status"].as_str(), t["attempt"].as_u64()), (Some("succeeded"), Some(2)), "{t:#}");
    let (_, list) = api.get(&format!("/v1/tasks/{id}/artifacts")).await;
    assert_eq!(names(&list), ["first-only.txt", "keep.txt"], "the failed attempt's files are kept: {list:#}");
    let (status, _, body) = download(&api, &id, "keep.txt").await;
    assert_eq!((status, body.as_slice()), (200, &b"attempt 2\n"[..]), "the later attempt's bytes");
    let keep = list["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "keep.txt").unwrap();
    assert_eq!(keep["size"], 10, "{keep}");
    let stored: Vec<Value> = common::kinds(&api.events(&id, WAIT).await)
        .into_iter()
        .filter(|k| k == "artifacts.stored")
        .map(Value::from)
        .collect();
    assert_eq!(stored.len(), 2, "one event per attempt that ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_attempt_stores_nothing_and_leaves_no_directory() {
    let inputs = Inputs::new();
    let smith = Smith::start(Opts::new().config(&inputs.agent())).await;
    let api = smith.api();
    let id = api.submit_id(json!({"agent": "artist", "input": "slow"})).await;
    let mut stream = api.sse(&format!("/v1/tasks/{id}/events"), None).await;
    while let Some(f) = stream.next(WAIT).await {
        if f.event == "output" {
            break;
        }
    }
    let dirs = smith.data_dir().join("work/artifacts");
    assert_eq!(std::fs::read_dir(&dirs).unwrap().count(), 1, "the running attempt has its directory");
    assert_eq!(api.cancel(&id).await.0, 202);
    let t = api.wait_terminal(&id, WAIT).await;
    assert_eq!(t["status"], "cancelled", "{t:#}");
    assert_eq!(api.get(&format!("/v1/tasks/{id}/artifacts")).await.1, json!({"artifacts": []}));
    let kinds = common::kinds(&api.events(&id, WAIT).await);
    assert!(!kinds.contains(&"artifacts.stored".to_string()), "{kinds:?}");
    assert_eq!(std::fs::read_dir(&dirs).unwrap().count(), 0, "the directory is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_worker_and_gateway_share_artifacts_by_url() {
    let Some(services) = Services::from_env() else { return };
    let inputs = Inputs::new();
    let shared = tempfile::tempdir().unwrap();
    let config = format!("[artifacts]\nurl = \"file://{}\"\n\n{}", shared.path().display(), inputs.agent());
    let cluster = Cluster::new(&services, &config).await;
    let (_worker, gateway) = tokio::join!(cluster.start(Role::Worker), cluster.start(Role::Gateway));
    let api = gateway.api();
    let id = files_are_stored_and_served(&api, &inputs).await;
    assert!(shared.path().join("default").join(&id).join("data.bin").is_file());
}

/// `moto_server` (PyPI `moto[server]`): `SMITH_TEST_MOTO_SERVER`, else on `PATH`, else in
/// `.ci/tools/venv`. CI sets the service URLs and installs it: there a missing one is a failure.
fn moto_server() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = std::env::var_os("SMITH_TEST_MOTO_SERVER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).map(|dir| dir.join("moto_server")).find(|p| p.is_file())
        })
        .or_else(|| Some(repo.join(".ci/tools/venv/bin/moto_server")).filter(|p| p.is_file()));
    if found.is_none() {
        if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() {
            panic!(
                "moto_server not installed: set SMITH_TEST_MOTO_SERVER or run .ci/run's install step (.ci/tools/venv)"
            );
        }
        println!("skipped: moto_server not installed (SMITH_TEST_MOTO_SERVER unset)");
    }
    found
}

/// A `moto_server` on a free port, killed when dropped.
struct Moto {
    child: tokio::process::Child,
    url: String,
}

impl Moto {
    async fn start(bin: &Path, dir: &Path) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("moto.log")).unwrap();
        let child = tokio::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if http.get(format!("{url}/moto-api/")).send().await.is_ok() {
                return Moto { child, url };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not answer: {}", std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_go_to_an_s3_bucket_and_come_back_through_the_gateway() {
    let Some(bin) = moto_server() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let moto = Moto::start(&bin, scratch.path()).await;
    // moto takes an unsigned CreateBucket; every request smith makes is signed
    let made = reqwest::Client::new().put(format!("{}/smith-artifacts", moto.url)).send().await.unwrap();
    assert!(made.status().is_success(), "create the bucket: {}", made.status());
    let inputs = Inputs::new();
    let config = format!(
        "[artifacts]\nurl = \"s3://smith-artifacts/runs?endpoint={}&region=us-east-1\"\n\n{}",
        moto.url,
        inputs.agent()
    );
    let opts = Opts::new()
        .config(&config)
        .env("AWS_ACCESS_KEY_ID", "AKIDMOTOTEST")
        .env("AWS_SECRET_ACCESS_KEY", "moto-secret-never-logged");
    let smith = Smith::start(opts).await;
    files_are_stored_and_served(&smith.api(), &inputs).await;
    assert!(!smith.data_dir().join("artifacts").exists(), "nothing went to the data directory");
    assert!(!smith.stderr().contains("moto-secret-never-logged"), "the secret key is never logged");
}
