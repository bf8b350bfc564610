//! Git workspaces (docs/workspaces.md): agents with a `workspace` run each task in a checkout of
//! their own, on their own branch, and what they changed is recorded as a `workspace.diff`
//! event and served at `GET /v1/tasks/{id}/patch`. Everything runs through the real binary, the
//! real `git`, and a real repository in a temp dir.

use crate::common::anthropic_mock::Mock;
use crate::common::cluster::{Cluster, Role, Services};
use crate::common::{self, git, git_repo, Api, Frame, Opts, Smith};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
/// A repository password that must never be served or logged.
const PASSWORD: &str = "hunter2-workspace";

/// The agent's own git identity: commits it makes itself need one (its environment is cleared).
const IDENTITY: &str = "GIT_AUTHOR_NAME = \"Agent\", GIT_AUTHOR_EMAIL = \"agent@localhost\", \
                        GIT_COMMITTER_NAME = \"Agent\", GIT_COMMITTER_EMAIL = \"agent@localhost\"";

/// A `process` agent that writes its input into the shared file `shared.txt` and a file of its
/// own, waits (so that concurrent tasks overlap), lists what it sees, commits, and leaves one
/// more file uncommitted for the platform to commit.
const CODER: &str = r#"set -e
printf '%s\n' "$(cat)" > shared.txt
echo mine > "own-$SMITH_TASK_ID.txt"
sleep 1
ls
git add shared.txt "own-$SMITH_TASK_ID.txt"
git commit -q -m "task $SMITH_TASK_ID"
echo later > "left-$SMITH_TASK_ID.txt"
"#;

fn coder_config(repo: &Path, mode: &str, extra: &str) -> String {
    format!(
        "[agents.coder]\nexecutor = \"process\"\ncommand = \"sh\"\nargs = [\"-c\", '''{CODER}''']\n\
         concurrency = 4\nenv = {{ {IDENTITY} }}\n\
         workspace = {{ repo = \"{}\", base = \"main\", mode = \"{mode}\"{extra} }}\n",
        repo.display()
    )
}

/// The data of the task's events of `kind`.
fn events_of(frames: &[Frame], kind: &str) -> Vec<Value> {
    frames.iter().filter(|f| f.event == kind).map(|f| f.json()["data"].clone()).collect()
}

/// Submits a task of `agent` and waits for its end: its id and the task.
async fn run(api: &Api, agent: &str) -> (String, Value) {
    let (id, t) = api.run(json!({"agent": agent, "input": ""}), WAIT).await;
    (id, t)
}

async fn patch(api: &Api, id: &str) -> (u16, String) {
    let r = api.request(reqwest::Method::GET, &format!("/v1/tasks/{id}/patch")).send().await.expect("GET patch");
    let status = r.status().as_u16();
    let kind = r.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_string());
    let text = r.text().await.expect("patch body");
    if status == 200 {
        assert_eq!(kind.as_deref(), Some("text/x-diff; charset=utf-8"));
    }
    (status, text)
}

/// Two concurrent tasks of `coder` edit the same file of one repository; each task's branch
/// holds its own change only, the base checkout stays clean, each patch is the branch's diff.
async fn two_tasks_stay_apart(api: &Api, repo: &Path) {
    let ids = [
        api.submit_id(json!({"agent": "coder", "input": "from the first"})).await,
        api.submit_id(json!({"agent": "coder", "input": "from the second"})).await,
    ];
    let base = git(repo, &["rev-parse", "main"]);
    for (id, input) in ids.iter().zip(["from the first", "from the second"]) {
        let t = api.wait_terminal(id, WAIT).await;
        assert_eq!(t["status"], "succeeded", "{t:#}");
        // neither saw the other's file
        let seen = t["result"].to_string();
        assert!(seen.contains(&format!("own-{id}.txt")), "{seen}");
        let other = ids.iter().find(|o| *o != id).unwrap();
        assert!(!seen.contains(other.as_str()), "task {id} saw the other's file: {seen}");

        let frames = api.events(id, WAIT).await;
        let ready = events_of(&frames, "workspace.ready");
        assert_eq!(ready.len(), 1, "{frames:?}");
        let branch = format!("smith/{id}");
        assert_eq!(ready[0]["branch"], branch.as_str());
        assert_eq!(ready[0]["commit"], base.as_str());
        let diffs = events_of(&frames, "workspace.diff");
        assert_eq!(diffs.len(), 1, "{frames:?}");
        let d = &diffs[0];
        assert_eq!(d["from"], base.as_str());
        assert_eq!(d["to"], git(repo, &["rev-parse", &branch]).as_str(), "the branch is where the attempt left it");
        assert_eq!(d["commits"], 2, "the agent's commit and the platform's of what it left: {d}");

        // the branch holds this task's change and nothing of the other's
        assert_eq!(git(repo, &["show", &format!("{branch}:shared.txt")]), input);
        let mut changed: Vec<String> =
            git(repo, &["diff", "--name-only", "main", &branch]).lines().map(str::to_string).collect();
        changed.sort();
        let mut want = vec![format!("left-{id}.txt"), format!("own-{id}.txt"), "shared.txt".to_string()];
        want.sort();
        assert_eq!(changed, want);
        // the patch, served and in the event, is the branch's diff to the letter
        let expected = git_raw(repo, &["diff", "--binary", &base, &branch]);
        let (status, served) = patch(api, id).await;
        assert_eq!(status, 200, "{served}");
        assert_eq!(served, expected);
        assert_eq!(d["patch"], expected.as_str());
        // and through the CLI, which `git apply` takes
        let (code, out, err) = common::cli(&["--server", &api.url(""), "task", "patch", id], WAIT).await;
        assert_eq!((code, out.as_str()), (0, expected.as_str()), "{err}");
        assert_eq!(d["patch_bytes"], expected.len());
    }
    // the base checkout: untouched, clean, and no checkout left behind
    assert_eq!(git(repo, &["status", "--porcelain"]), "", "the base checkout changed");
    assert_eq!(git(repo, &["rev-parse", "main"]), base);
    assert_eq!(git(repo, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);
}

/// git's stdout untrimmed (a patch ends with a newline).
fn git_raw(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").args(args).current_dir(dir).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_work_in_worktrees_of_their_own() {
    let repo = git_repo(&[("shared.txt", "the original\n"), ("README", "a repository\n")]);
    let smith = Smith::start(Opts::new().config(&coder_config(repo.path(), "worktree", ""))).await;
    two_tasks_stay_apart(&smith.api(), repo.path()).await;
    assert!(
        !smith.data_dir().join("work/tasks").read_dir().is_ok_and(|mut d| d.next().is_some()),
        "a checkout was left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_work_in_clones_of_their_own() {
    let repo = git_repo(&[("shared.txt", "the original\n")]);
    let smith = Smith::start(Opts::new().config(&coder_config(repo.path(), "clone", ""))).await;
    two_tasks_stay_apart(&smith.api(), repo.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_stay_apart_across_two_workers() {
    let Some(services) = Services::from_env() else { return };
    let repo = git_repo(&[("shared.txt", "the original\n")]);
    let config = format!("[store]\npool_size = 4\n\n{}", coder_config(repo.path(), "worktree", ""));
    let cluster = Cluster::new(&services, &config).await;
    let _sup = cluster.start(Role::Supervisor).await;
    let (gw, _w1, _w2) =
        tokio::join!(cluster.start(Role::Gateway), cluster.start(Role::Worker), cluster.start(Role::Worker));
    two_tasks_stay_apart(&gw.api(), repo.path()).await;
}

/// Two concurrent tasks of one `claude-code` agent — the real CLI against the mock API, which has
/// it `Write` the shared file and `git commit` it with `Bash` — stay apart like any agent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claude_code_agents_commit_on_branches_of_their_own() {
    let Some(claude) = common::claude_cli() else { return };
    let mock = Mock::start().await;
    let home = tempfile::tempdir().unwrap();
    let repo = git_repo(&[("shared.txt", "the original\n")]);
    let config = format!(
        "[agents.coder]\nexecutor = \"claude-code\"\ncommand = \"{claude}\"\nmax_attempts = 1\nkill_grace = \"2s\"\n\
         permission_mode = \"acceptEdits\"\nallowed_tools = [\"Bash(git commit:*)\"]\nstall_timeout = \"60s\"\n\
         workspace = {{ repo = \"{}\", base = \"main\" }}\n\
         env = {{ ANTHROPIC_BASE_URL = \"{}\", ANTHROPIC_API_KEY = \"test-key\", HOME = \"{}\", \
         CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\", DISABLE_AUTOUPDATER = \"1\", {IDENTITY} }}\n",
        repo.path().display(),
        mock.url,
        home.path().display()
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    let ids = [
        api.submit_id(json!({"agent": "coder", "input": "EDIT first-word"})).await,
        api.submit_id(json!({"agent": "coder", "input": "EDIT second-word"})).await,
    ];
    let base = git(repo.path(), &["rev-parse", "main"]);
    for (id, word) in ids.iter().zip(["first-word", "second-word"]) {
        let t = api.wait_terminal(id, Duration::from_secs(120)).await;
        assert_eq!(t["status"], "succeeded", "{t:#}\n{}", smith.stderr());
        assert!(t["result"].to_string().contains(&format!("edited {word}")), "{t:#}");
        let branch = format!("smith/{id}");
        assert_eq!(git(repo.path(), &["show", &format!("{branch}:shared.txt")]), word);
        assert_eq!(
            git(repo.path(), &["log", "-1", "--format=%s", &branch]),
            format!("edit {word}"),
            "the agent's commit"
        );
        assert_eq!(git(repo.path(), &["diff", "--name-only", "main", &branch]), "shared.txt", "only its own change");
        let expected = git_raw(repo.path(), &["diff", "--binary", &base, &branch]);
        let (status, served) = patch(&api, id).await;
        assert_eq!((status, served), (200, expected));
    }
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "", "the base checkout changed");
    assert_eq!(git(repo.path(), &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_second_turn_continues_the_first_turns_branch() {
    let repo = git_repo(&[("log.txt", "")]);
    let script = "set -e\\nprintf '%s\\\\n' \\\"$(cat)\\\" >> log.txt\\ncat log.txt";
    let config = format!(
        "[agents.scribe]\nexecutor = \"process\"\ncommand = \"sh\"\nargs = [\"-c\", \"{script}\"]\n\
         env = {{ {IDENTITY} }}\nworkspace = {{ repo = \"{}\", base = \"main\" }}\n",
        repo.path().display()
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    let (status, session) = api.post("/v1/sessions", &json!({"agent": "scribe", "input": "first line"})).await;
    assert_eq!(status, 201, "{session}");
    let sid = session["id"].as_str().unwrap().to_string();
    let first = session["turns"][0]["id"].as_str().unwrap().to_string();
    let t = api.wait_terminal(&first, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    let (status, turn) = api.post(&format!("/v1/sessions/{sid}/turns"), &json!({"input": "second line"})).await;
    assert_eq!(status, 201, "{turn}");
    let second = turn["id"].as_str().unwrap().to_string();
    let t = api.wait_terminal(&second, WAIT).await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert!(t["result"].to_string().contains("first line\\nsecond line"), "the second turn saw: {}", t["result"]);
    let frames = api.events(&second, WAIT).await;
    let ready = &events_of(&frames, "workspace.ready")[0];
    let branch = ready["branch"].as_str().unwrap().to_string();
    assert!(branch.starts_with("smith/session/"), "{ready}");
    assert_eq!(ready["base"], branch.as_str(), "the turn continues the session's branch");
    assert_eq!(git(repo.path(), &["show", &format!("{branch}:log.txt")]), "first line\nsecond line");
    assert_eq!(git(repo.path(), &["rev-list", "--count", &format!("main..{branch}")]), "2", "one commit a turn");
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_first_and_a_failing_setup_fails_the_task_with_its_output() {
    let repo = git_repo(&[("README", "a repository\n")]);
    let path = repo.path().display();
    let config = format!(
        "[agents.built]\nexecutor = \"process\"\ncommand = \"cat\"\nargs = [\"made.txt\"]\n\
         workspace = {{ repo = \"{path}\", setup = [\"echo preparing\", \"echo made by setup > made.txt\"] }}\n\n\
         [agents.broken]\nexecutor = \"process\"\ncommand = \"true\"\nmax_attempts = 1\n\
         workspace = {{ repo = \"{path}\", setup = [\"echo preparing; echo it broke >&2; exit 3\"] }}\n"
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();

    let (id, t) = run(&api, "built").await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    assert!(t["result"].to_string().contains("made by setup"), "{t:#}");
    let outputs = events_of(&api.events(&id, WAIT).await, "output");
    assert_eq!(outputs[0], json!({"stream": "setup", "step": 0, "text": "preparing"}), "{outputs:?}");

    let (id, t) = run(&api, "broken").await;
    assert_eq!(t["status"], "failed", "{t:#}");
    assert_eq!(t["error"]["code"], "setup_failed", "{t:#}");
    assert!(t["error"]["message"].as_str().unwrap().contains("exit code 3"), "{t:#}");
    let outputs = events_of(&api.events(&id, WAIT).await, "output");
    let texts: Vec<&str> = outputs.iter().filter_map(|o| o["text"].as_str()).collect();
    assert_eq!(texts, ["preparing", "it broke"], "stdout and stderr of the setup, as events");
    assert_eq!(git(repo.path(), &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);
    let branches = git(repo.path(), &["branch", "--list", "smith/*"]);
    assert!(!branches.contains(&id), "a task that changed nothing leaves no branch: {branches}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_that_cannot_be_had_or_a_missing_base_fails_fast_and_clearly() {
    let repo = git_repo(&[("README", "a repository\n")]);
    let gone = tempfile::tempdir().unwrap();
    let config = format!(
        "[agents.nowhere]\nexecutor = \"process\"\ncommand = \"true\"\n\
         workspace = {{ repo = \"file://{}/missing.git\" }}\n\n\
         [agents.notadir]\nexecutor = \"process\"\ncommand = \"true\"\n\
         workspace = {{ repo = \"{}/missing\" }}\n\n\
         [agents.nobase]\nexecutor = \"process\"\ncommand = \"true\"\n\
         workspace = {{ repo = \"{}\", base = \"no-such-branch\" }}\n\n\
         [agents.secret]\nexecutor = \"process\"\ncommand = \"true\"\n\
         workspace = {{ repo = \"http://smith:{PASSWORD}@127.0.0.1:9/shop.git\" }}\n",
        gone.path().display(),
        gone.path().display(),
        repo.path().display()
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    for (agent, code, words) in [
        ("nowhere", "workspace_unavailable", "cannot clone"),
        ("notadir", "workspace_unavailable", "is not a git repository"),
        ("nobase", "workspace_base_unknown", "no-such-branch"),
        ("secret", "workspace_unavailable", "cannot clone http://smith:<redacted>@127.0.0.1:9/shop.git"),
    ] {
        let started = std::time::Instant::now();
        let (id, t) = run(&api, agent).await;
        assert_eq!(t["status"], "failed", "{agent}: {t:#}");
        assert_eq!(t["error"]["code"], code, "{agent}: {t:#}");
        assert!(t["error"]["message"].as_str().unwrap().contains(words), "{agent}: {t:#}");
        assert_eq!(t["attempt"], 1, "{agent}: not retried");
        assert!(started.elapsed() < Duration::from_secs(20), "{agent}: failing took {:?}", started.elapsed());
        let (status, body) = patch(&api, &id).await;
        assert_eq!(status, 409, "{agent}: no patch: {body}");
        let (code, _, err) = common::cli(&["--server", &api.url(""), "task", "patch", &id], WAIT).await;
        assert!(code != 0 && err.contains("409 (conflict)"), "{agent}: {code} {err}");
    }
    // the repository's password is never served nor logged
    let (_, agents) = api.get("/v1/agents").await;
    assert!(!agents.to_string().contains(PASSWORD), "{agents}");
    assert!(agents.to_string().contains("http://smith:<redacted>@127.0.0.1:9/shop.git"), "{agents}");
    assert!(!smith.stderr().contains(PASSWORD), "the password was logged");
    let work = smith.data_dir().join("work");
    let left: Vec<_> = ["tasks", "repos"]
        .iter()
        .flat_map(|d| std::fs::read_dir(work.join(d)).into_iter().flatten().flatten().map(|e| e.path()))
        .collect();
    assert!(left.is_empty(), "directories left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_may_start_from_a_base_of_its_own() {
    let repo = git_repo(&[("README", "a repository\n")]);
    git(repo.path(), &["checkout", "--quiet", "-b", "feature"]);
    std::fs::write(repo.path().join("feature.txt"), "only on the feature branch\n").unwrap();
    git(repo.path(), &["add", "feature.txt"]);
    git(repo.path(), &["commit", "--quiet", "-m", "a feature"]);
    git(repo.path(), &["tag", "v1"]);
    git(repo.path(), &["checkout", "--quiet", "main"]);
    let config = format!(
        "[agents.lister]\nexecutor = \"process\"\ncommand = \"ls\"\n\
         workspace = {{ repo = \"{}\", base = \"main\" }}\n",
        repo.path().display()
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    for (base, sees) in [(None, false), (Some("feature"), true), (Some("v1"), true)] {
        let mut body = json!({"agent": "lister", "input": ""});
        if let Some(b) = base {
            body["workspace"] = json!({"base": b});
        }
        let (id, t) = api.run(body, WAIT).await;
        assert_eq!(t["status"], "succeeded", "{base:?}: {t:#}");
        assert_eq!(t["result"].as_str().unwrap().contains("feature.txt"), sees, "{base:?}: {t:#}");
        assert_eq!(t["workspace"], base.map_or(Value::Null, |b| json!({"base": b})));
        let frames = api.events(&id, WAIT).await;
        let ready = events_of(&frames, "workspace.ready");
        let commit = git(repo.path(), &["rev-parse", base.unwrap_or("main")]);
        assert_eq!(ready[0]["commit"], commit.as_str(), "{base:?}");
    }
    // a base the repository lacks fails the task clearly; a malformed one is refused
    let (_, t) = api.run(json!({"agent": "lister", "input": "", "workspace": {"base": "no-such-branch"}}), WAIT).await;
    assert_eq!(t["error"]["code"], "workspace_base_unknown", "{t:#}");
    assert!(t["error"]["message"].as_str().unwrap().contains("no-such-branch"), "{t:#}");
    for bad in ["-x", "a..b", "has space", ""] {
        let (status, answer) =
            api.post("/v1/tasks", &json!({"agent": "lister", "input": "", "workspace": {"base": bad}})).await;
        assert_eq!(status, 422, "{bad:?}: {answer}");
        assert!(answer.to_string().contains("workspace.base"), "{bad:?}: {answer}");
    }
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
    let left = std::fs::read_dir(smith.data_dir().join("work/tasks")).into_iter().flatten().count();
    assert_eq!(left, 0, "checkouts left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_leaves_no_checkout_behind() {
    let repo = git_repo(&[("README", "a repository\n")]);
    let config = format!(
        "[agents.slow]\nexecutor = \"process\"\ncommand = \"sleep\"\nargs = [\"60\"]\ninput = \"none\"\n\
         kill_grace = \"1s\"\nworkspace = {{ repo = \"{}\" }}\n",
        repo.path().display()
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    let id = api.submit_id(json!({"agent": "slow", "input": ""})).await;
    api.wait_status(&id, "running", WAIT).await;
    let dir = smith.data_dir().join("work/tasks").join(&id);
    let deadline = std::time::Instant::now() + WAIT;
    while !dir.join("README").exists() {
        assert!(std::time::Instant::now() < deadline, "no checkout at {}", dir.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(git(repo.path(), &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 2);
    let (status, body) = api.cancel(&id).await;
    assert_eq!(status, 202, "{body}");
    let t = api.wait_terminal(&id, WAIT).await;
    assert_eq!(t["status"], "cancelled", "{t:#}");
    // the checkout and the repository's record of it go with the attempt
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let worktrees = git(repo.path(), &["worktree", "list", "--porcelain"]).matches("worktree ").count();
        if worktrees == 1 && !dir.exists() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left behind: {worktrees} worktrees, dir {}", dir.exists());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(git(repo.path(), &["status", "--porcelain"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_workspace_definitions_are_refused_at_start() {
    for (workspace, words) in [
        ("{ repo = \"relative/path\" }", "absolute path or a URL"),
        ("{ repo = \"/r\", base = \"a..b\" }", "not a valid branch"),
        ("{ repo = \"/r\", mode = \"copy\" }", "copy"),
        ("{ repo = \"/r\", author = \"nobody\" }", "Name <email>"),
        ("{ repo = \"/r\", shallow = true }", "shallow"),
    ] {
        let config = format!("[agents.x]\nexecutor = \"process\"\ncommand = \"true\"\nworkspace = {workspace}\n");
        let refused = Smith::start_refused(Opts::new().config(&config)).await;
        assert!(refused.stderr.contains(words), "{workspace}: {}", refused.stderr);
    }
    let config = "[agents.x]\nexecutor = \"anthropic\"\nmodel = \"m\"\nworkspace = { repo = \"/r\" }\n";
    let refused = Smith::start_refused(Opts::new().config(config)).await;
    assert!(refused.stderr.contains("only for executors"), "{}", refused.stderr);
    let config =
        "[agents.x]\nexecutor = \"process\"\ncommand = \"true\"\ncwd = \"/tmp\"\nworkspace = { repo = \"/r\" }\n";
    let refused = Smith::start_refused(Opts::new().config(config)).await;
    assert!(refused.stderr.contains("exclude each other"), "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_repository_is_fetched_and_the_branch_pushed() {
    // a bare "remote" that the worker reaches by URL, with the task's branch pushed back to it
    let upstream = git_repo(&[("shared.txt", "the original\n")]);
    let remote = tempfile::tempdir().unwrap();
    let bare = remote.path().join("shop.git");
    git(remote.path(), &["clone", "--quiet", "--bare", &upstream.path().display().to_string(), "shop.git"]);
    let url = format!("file://{}", bare.display());
    let config = format!(
        "[agents.pusher]\nexecutor = \"process\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo pushed > pushed.txt\"]\n\
         workspace = {{ repo = \"{url}\", base = \"main\", push = true, author = \"Ada Lovelace <ada@example.com>\" }}\n"
    );
    let smith = Smith::start(Opts::new().config(&config)).await;
    let api = smith.api();
    let (id, t) = run(&api, "pusher").await;
    assert_eq!(t["status"], "succeeded", "{t:#}");
    let diff = &events_of(&api.events(&id, WAIT).await, "workspace.diff")[0];
    let branch = format!("smith/{id}");
    assert_eq!(diff["pushed"], format!("origin/{branch}"), "{diff}");
    assert_eq!(git(&bare, &["show", &format!("{branch}:pushed.txt")]), "pushed");
    assert_eq!(git(&bare, &["log", "-1", "--format=%an <%ae>", &branch]), "Ada Lovelace <ada@example.com>");
    // the agents list serves the definition without a password in the URL
    let (_, agents) = api.get("/v1/agents").await;
    let def = agents["items"].as_array().unwrap().iter().find(|a| a["name"] == "pusher").unwrap().clone();
    assert_eq!(def["workspace"]["repo"], url.as_str());
    assert_eq!(def["workspace"]["push"], true);
}
