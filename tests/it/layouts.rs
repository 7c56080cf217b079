//! Folders of layouts as sources: what `ferry export` and `skopeo sync --dest dir` write pushes back with every digest.

use std::path::Path;
use std::process::Command;

use ferry_testkit::{Pusher, Registry, generate_standard};
use serde_json::Value;

use crate::util::*;

fn export_to(source: &Path, out: &Path, layout: &str) {
    let ran = run(ferry()
        .current_dir(out.parent().unwrap())
        .arg("export")
        .arg(source)
        .arg("--out")
        .arg(out)
        .args(["--layout", layout]));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
}

fn list_rows(source: &Path, extra: &[&str]) -> (i32, Value, String) {
    let ran = run(ferry()
        .arg("list")
        .arg(source)
        .args(["--format", "json"])
        .args(extra));
    let rows = serde_json::from_str(&ran.stdout).unwrap_or(Value::Null);
    (ran.code, rows, ran.stderr)
}

/// An export in `layout` lists like the tree it came from, pushes back with every digest, and validates.
fn round_trip(layout: &str, seed: u64) {
    let fx = standard_tree(seed);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("export");
    export_to(fx.root(), &out, layout);
    let before = snapshot(&out);
    let (code, exported, stderr) = list_rows(&out, &[]);
    assert_eq!(code, 0, "{stderr}");
    let (_, original, _) = list_rows(fx.root(), &[]);
    assert_eq!(
        exported, original,
        "the {layout} export lists like its tree"
    );

    let reg = Registry::start().unwrap();
    let dest = format!("http://{}", reg.host());
    let pushed = run(&mut push_cmd(&out, &dest, work.path(), &[]));
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
    let validated = run(&mut validate_cmd(&out, &dest, work.path(), &[]));
    assert_eq!(validated.code, 0, "{}", validated.stderr);
    assert_eq!(snapshot(&out), before, "the layouts are read-only");
}

#[test]
fn a_dir_export_pushes_back_with_every_digest() {
    round_trip("dir", 41);
}

#[test]
fn an_oci_export_pushes_back_with_every_digest() {
    round_trip("oci", 42);
}

#[test]
fn skopeo_sync_dir_folders_push_with_every_digest() {
    let source = Registry::start().unwrap();
    let truth = generate_standard(&source, 43).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("sync");
    // skopeo, an independent writer of dir: folders; nested names kept by --scoped (it cannot
    // copy an image whose foreign layer is not at its URL, so legacy/foreign is left out).
    let repos = ["alpine", "ns/sub", "org/team/sub/app", "multi/oci-app"];
    for repo in repos {
        let ran = Command::new("skopeo")
            .args([
                "sync",
                "--all",
                "--preserve-digests",
                "--scoped",
                "--src",
                "docker",
                "--dest",
                "dir",
                "--src-tls-verify=false",
            ])
            .arg(format!("{}/{repo}", source.host()))
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "skopeo sync {repo}: {}",
            String::from_utf8_lossy(&ran.stderr)
        );
    }
    let reg = Registry::start().unwrap();
    let pushed = run(&mut push_cmd(
        &out,
        &format!("http://{}", reg.host()),
        work.path(),
        &["--subpath", &source.host()],
    ));
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    let pusher = Pusher::new(&reg);
    let mut checked = 0;
    for (reference, tag) in &truth.tags {
        if !repos.contains(&tag.repository.as_str()) {
            continue;
        }
        let got = pusher
            .get_manifest(&default_destination(&tag.repository), &tag.tag)
            .unwrap_or_else(|e| panic!("{reference}: {e:#}"));
        assert_eq!(got.digest, tag.digest, "{reference}");
        checked += 1;
    }
    assert!(checked >= 6, "{checked}");
}
