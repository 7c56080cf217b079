//! A destination that dies, freezes or never answers, a full disk, a Ctrl-C: the run stops in
//! bounded time with exit 2 (or 128 + signal), says why once, and leaves a failed list that resumes it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_testkit::{Proxy, Pusher, Registry, SilentServer};
use nix::sys::signal::Signal;

use crate::util::{
    SmallDisk, all_tags, bulk_tree, failed_lines, rerun_failed_push, spawn_ferry, tags_at,
    wait_at_most, wait_for, workdir,
};

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

    let (code, stderr, _) = rerun_failed_push(dir.path(), &root, &url);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tags_at(&pusher, &truth), all_tags(&truth));
}
