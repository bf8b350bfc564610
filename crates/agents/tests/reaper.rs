//! The node's orphan reaper against the helper commands the platform waits for itself. A binary
//! of its own: the reaper reaps every zombie child of the process, which would take the exit
//! status of other tests' children if they shared it.

/// A helper command run with `process::output` is ours to wait for: the orphan reaper, which
/// reaps every other zombie child of the node, never takes its exit status first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helper_commands_are_kept_from_the_orphan_reaper() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reaper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reaped = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reaped += smith_agents::process::reap_orphans();
            }
            reaped
        })
    };
    for i in 0..200 {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(format!("echo {i}"));
        let out = smith_agents::process::output(cmd).await.unwrap_or_else(|e| panic!("run {i}: {e}"));
        assert!(out.status.success(), "run {i}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), i.to_string());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reaper.join().unwrap(), 0, "the reaper took a helper's exit status");
}
