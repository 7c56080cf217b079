//! A destination that dies, freezes or never answers, a full disk, a Ctrl-C: the run stops in
//! bounded time with exit 2 (or 128 + signal), says why once, and leaves a failed list that resumes it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::{BulkSpec, Proxy, Pusher, Registry, SilentServer, Truth, generate_bulk};
use nix::sys::signal::Signal;

use crate::util::{default_destination, failed_lines, workdir};

/// A tree of `repositories` × `tags` small images written by docker-registry.
fn bulk_tree(
    repositories: usize,
    tags: usize,
    layer_bytes: usize,
) -> (ferry_testkit::StoppedTree, Truth) {
    let reg = Registry::start().expect("docker-registry starts");
    let spec = BulkSpec {
        repositories,
        tags_per_repo: tags,
        base_layers: 6,
        base_layer_bytes: layer_bytes,
        unique_layer_bytes: layer_bytes / 4,
        ..BulkSpec::default()
    };
    let truth = generate_bulk(&reg, &spec).expect("bulk scenario pushes");
    (reg.stop().expect("registry stops"), truth)
}

/// The ferry binary as a child process (so a test can signal it or kill what it talks to).
fn spawn_ferry(dir: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ferry"));
    for var in [
        "FERRY_USERNAME",
        "FERRY_PASSWORD",
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts")
}

/// Waits for the child at most `limit`; kills it and fails the test past that.
fn wait_at_most(mut child: Child, limit: Duration) -> (i32, String, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            return (out.status.code().unwrap_or(-1), stderr, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "ferry still running after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tags the registry's storage holds so far (`current/link` files written).
fn tags_stored(storage_root: &Path) -> usize {
    walkdir::WalkDir::new(storage_root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name() == "link" && e.path().parent().is_some_and(|p| p.ends_with("current"))
        })
        .count()
}

/// Waits until `ready()` or `limit` passes; false when it never became true.
fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Source `repo:tag` of every tag the destination serves with the source digest.
fn tags_at(pusher: &Pusher, truth: &Truth) -> BTreeSet<String> {
    truth
        .tags
        .values()
        .filter(|t| {
            pusher
                .get_manifest(&default_destination(&t.repository), &t.tag)
                .is_ok_and(|m| m.digest == t.digest)
        })
        .map(|t| format!("{}:{}", t.repository, t.tag))
        .collect()
}

fn all_tags(truth: &Truth) -> BTreeSet<String> {
    truth
        .tags
        .values()
        .map(|t| format!("{}:{}", t.repository, t.tag))
        .collect()
}

#[test]
fn a_destination_killed_mid_push_stops_the_run_within_a_minute_and_a_rerun_completes() {
    let (tree, truth) = bulk_tree(50, 5, 2048);
    assert!(truth.tags.len() >= 200, "{} tags", truth.tags.len());
    let mut dest = Registry::start().expect("destination starts");
    let dir = workdir();
    let root = tree.root().to_str().unwrap().to_string();
    let url = dest.url();
    let child = spawn_ferry(
        dir.path(),
        &["push", &root, "-d", &url, "-o", "failed.txt", "-j", "2"],
    );
    assert!(
        wait_for(Duration::from_secs(120), || tags_stored(
            dest.storage_root()
        ) >= 10),
        "the push never got going"
    );
    dest.crash();
    let killed = Instant::now();
    let (code, stderr, _) = wait_at_most(child, Duration::from_secs(90));
    let took = killed.elapsed();
    eprintln!("kill → exit: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 2, "{stderr}");
    assert!(took <= Duration::from_secs(60), "took {took:?}\n{stderr}");
    assert_eq!(
        stderr.matches("push stopped:").count(),
        1,
        "the cause is said once:\n{stderr}"
    );
    assert!(stderr.contains("unreachable since"), "{stderr}");

    // Nothing lost: every tag not at the destination is in the failed list; a tag listed but
    // present can only be one whose manifest went through as the registry died (in flight).
    dest.restart().expect("destination restarts");
    let pusher = Pusher::new(&dest);
    let at = tags_at(&pusher, &truth);
    let failed: BTreeSet<String> = failed_lines(&dir.path().join("failed.txt"))
        .into_iter()
        .collect();
    let missing: BTreeSet<String> = all_tags(&truth).difference(&at).cloned().collect();
    assert!(
        !missing.is_empty(),
        "the kill came too late to test anything"
    );
    assert!(
        missing.is_subset(&failed),
        "lost: {:?}",
        missing.difference(&failed).collect::<Vec<_>>()
    );
    assert!(
        failed.difference(&missing).count() <= 2,
        "listed but present beyond the 2 in flight: {:?}",
        failed.difference(&missing).collect::<Vec<_>>()
    );

    let rerun = spawn_ferry(
        dir.path(),
        &["push", &root, "-d", &url, "-o", "failed2.txt"],
    );
    let (code, stderr, _) = wait_at_most(rerun, Duration::from_secs(180));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tags_at(&pusher, &truth), all_tags(&truth));
}

#[test]
fn a_destination_frozen_mid_upload_stops_the_run_after_the_stall_timeout() {
    // One image with a big layer, so the freeze lands inside its upload.
    let (tree, _truth) = bulk_tree(1, 1, 96 << 20);
    let dest = Registry::start().expect("destination starts");
    let dir = workdir();
    let root = tree.root().to_str().unwrap().to_string();
    let url = dest.url();
    let child = spawn_ferry(
        dir.path(),
        &[
            "push",
            &root,
            "-d",
            &url,
            "-o",
            "failed.txt",
            "--timeout",
            "3",
        ],
    );
    let uploading = || {
        walkdir::WalkDir::new(dest.storage_root())
            .into_iter()
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name() == "data"
                    && e.path().to_string_lossy().contains("/_uploads/")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
    };
    assert!(
        wait_for(Duration::from_secs(120), uploading),
        "no upload started"
    );
    dest.signal(Signal::SIGSTOP).expect("SIGSTOP");
    let frozen = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_at_most(child, Duration::from_secs(120))
    }));
    let took = frozen.elapsed();
    dest.signal(Signal::SIGCONT).expect("SIGCONT");
    let (code, stderr, _) = result.expect("ferry ends");
    eprintln!("freeze → exit: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        took <= Duration::from_secs(3 + 60),
        "took {took:?}\n{stderr}"
    );
    assert!(stderr.contains("stalled since"), "{stderr}");
    assert_eq!(failed_lines(&dir.path().join("failed.txt")).len(), 1);
}

#[test]
fn a_destination_that_never_answers_is_given_up_within_90_seconds() {
    let silent = SilentServer::start().expect("silent server");
    let dir = workdir();
    let url = format!("http://{}", silent.host());
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/registry");
    let child = spawn_ferry(
        dir.path(),
        &[
            "push",
            tree.to_str().unwrap(),
            "-d",
            &url,
            "-o",
            "failed.txt",
        ],
    );
    let (code, stderr, took) = wait_at_most(child, Duration::from_secs(120));
    eprintln!("silent destination → exit: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 2, "{stderr}");
    assert!(took <= Duration::from_secs(90), "took {took:?}\n{stderr}");
    assert!(stderr.contains(&silent.host()), "{stderr}");
    assert!(silent.connections() > 0);
}

#[test]
fn validate_stops_when_the_registry_behind_a_gateway_dies() {
    let (tree, truth) = bulk_tree(30, 5, 1024);
    let mut dest = Registry::start().expect("destination starts");
    let dir = workdir();
    let root = tree.root().to_str().unwrap().to_string();
    let ran = crate::util::run(&mut crate::util::push_cmd(
        tree.root(),
        &dest.url(),
        dir.path(),
        &[],
    ));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    // A gateway (the testkit proxy) that answers 502 once the registry behind it is gone.
    let proxy = Proxy::start(&dest.url()).expect("proxy");
    let url = proxy.url();
    let child = spawn_ferry(
        dir.path(),
        &[
            "validate",
            &root,
            "-d",
            &url,
            "-o",
            "validate-failed.txt",
            "-j",
            "2",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(120), || proxy.requests().len() >= 40),
        "validate never got going"
    );
    // The gateway answers 502 from now on, whatever listens on the dead registry's port: under a
    // parallel test run another test's registry may be given that port a moment later.
    proxy.fail_next(usize::MAX, 502, |_, _| true);
    dest.crash();
    let killed = Instant::now();
    let (code, stderr, _) = wait_at_most(child, Duration::from_secs(90));
    let took = killed.elapsed();
    eprintln!("validate: kill → exit: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 2, "{stderr}");
    assert!(took <= Duration::from_secs(60), "took {took:?}\n{stderr}");
    assert_eq!(stderr.matches("validate stopped:").count(), 1, "{stderr}");
    assert!(stderr.contains("502"), "{stderr}");
    let failed = failed_lines(&dir.path().join("validate-failed.txt"));
    assert!(
        !failed.is_empty() && failed.len() < truth.tags.len(),
        "{failed:?}"
    );
}

/// A tmpfs of `bytes` mounted on a fresh folder; unmounted when dropped. `None` where this
/// machine does not let the test mount one (then the test says so and passes by skipping).
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn export_into_a_full_disk_stops_at_the_first_enospc_and_leaves_nothing_half_written() {
    let Some(disk) = SmallDisk::mount(2 << 20) else {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root and mount rights)");
        return;
    };
    let (tree, _truth) = bulk_tree(8, 2, 256 << 10);
    let dir = workdir();
    let out = disk.path.join("out");
    let ran = crate::util::run(
        crate::util::ferry()
            .current_dir(dir.path())
            .arg("export")
            .arg(tree.root())
            .arg("--out")
            .arg(&out)
            .args(["--link", "copy", "-o"])
            .arg(dir.path().join("failed.txt")),
    );
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert_eq!(
        ran.stderr.matches("export stopped:").count(),
        1,
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("disk full"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&disk.path.display().to_string()),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("still had about"), "{}", ran.stderr);
    assert!(!failed_lines(&dir.path().join("failed.txt")).is_empty());
    // Every file under a final name is whole: blobs hash to their names, no temp file is left.
    for entry in walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".ferry-tmp-"),
            "left behind: {}",
            entry.path().display()
        );
        if entry.file_type().is_file() && name.len() == 64 {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_eq!(
                crate::util::sha256(&bytes),
                format!("sha256:{name}"),
                "{}",
                entry.path().display()
            );
        }
    }
}

#[test]
fn sigint_mid_push_writes_the_failed_list_and_a_rerun_completes() {
    let (tree, truth) = bulk_tree(40, 5, 2048);
    let dest = Registry::start().expect("destination starts");
    let dir = workdir();
    let root = tree.root().to_str().unwrap().to_string();
    let url = dest.url();
    let child = spawn_ferry(
        dir.path(),
        &["push", &root, "-d", &url, "-o", "failed.txt", "-j", "2"],
    );
    assert!(
        wait_for(Duration::from_secs(120), || tags_stored(
            dest.storage_root()
        ) >= 10),
        "the push never got going"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let (code, stderr, took) = wait_at_most(child, Duration::from_secs(30));
    eprintln!("SIGINT → exit: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    let pusher = Pusher::new(&dest);
    let at = tags_at(&pusher, &truth);
    let failed: BTreeSet<String> = failed_lines(&dir.path().join("failed.txt"))
        .into_iter()
        .collect();
    let missing: BTreeSet<String> = all_tags(&truth).difference(&at).cloned().collect();
    assert!(
        !missing.is_empty(),
        "the signal came too late to test anything"
    );
    assert_eq!(
        missing, failed,
        "the failed list is exactly what is not there"
    );

    let failed_path = dir.path().join("failed.txt");
    let rerun = spawn_ferry(
        dir.path(),
        &[
            "push",
            &root,
            "-d",
            &url,
            "-o",
            "failed2.txt",
            "--images",
            failed_path.to_str().unwrap(),
        ],
    );
    let (code, stderr, _) = wait_at_most(rerun, Duration::from_secs(180));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tags_at(&pusher, &truth), all_tags(&truth));
}
