//! `ferry list` against trees written by docker-registry: what was pushed is what is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use ferry_testkit::tree;
use serde_json::Value;

use crate::util::{Fixture, ferry, snapshot, standard_tree};

/// Runs `ferry list <root> --format json` with extra args; returns (exit code, rows, stderr).
fn list_json(root: &Path, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let out = ferry()
        .arg("list")
        .arg(root)
        .args(["--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (
        out.status.code().unwrap(),
        rows.as_array().unwrap().clone(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tagged(rows: &[Value]) -> BTreeMap<String, &Value> {
    rows.iter()
        .filter(|r| !r["tag"].is_null())
        .map(|r| {
            (
                format!(
                    "{}:{}",
                    r["repository"].as_str().unwrap(),
                    r["tag"].as_str().unwrap()
                ),
                r,
            )
        })
        .collect()
}

/// Every tag of the truth, with digest, media type, platforms, and status ok.
fn assert_matches_truth(fixture_truth: &ferry_testkit::Truth, rows: &[Value]) {
    let by_ref = tagged(rows);
    let listed: BTreeSet<&String> = by_ref.keys().collect();
    let pushed: BTreeSet<&String> = fixture_truth.tags.keys().collect();
    assert_eq!(listed, pushed, "listed tags differ from pushed tags");
    for (reference, image) in &fixture_truth.tags {
        let row = by_ref[reference];
        assert_eq!(row["digest"], image.digest.as_str(), "{reference}");
        assert_eq!(row["media_type"], image.media_type.as_str(), "{reference}");
        assert_eq!(row["status"], "ok", "{reference}: {}", row["problems"]);
        let expected_size: u64 = image.blobs.iter().map(|b| b.size).sum();
        assert_eq!(row["size"], expected_size, "{reference} size");
        if !image.platforms.is_empty() {
            let platforms: Vec<(String, String, Option<String>)> = row["platforms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["os"].as_str().unwrap().to_string(),
                        p["architecture"].as_str().unwrap().to_string(),
                        p["variant"].as_str().map(str::to_string),
                    )
                })
                .collect();
            let expected: Vec<(String, String, Option<String>)> = image
                .platforms
                .iter()
                .map(|p| (p.os.clone(), p.architecture.clone(), p.variant.clone()))
                .collect();
            assert_eq!(platforms, expected, "{reference} platforms");
        }
        let expected_type = match image.kind.as_str() {
            "artifact" => None,
            k => Some(k),
        };
        if let Some(k) = expected_type {
            assert_eq!(row["type"], k, "{reference} type");
        }
    }
}

#[test]
fn list_reports_exactly_the_pushed_tags_and_leaves_the_tree_alone() {
    let fx = standard_tree(11);
    let before = snapshot(fx.root());
    let (code, rows, stderr) = list_json(fx.root(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_matches_truth(&fx.truth, &rows);
    assert!(
        rows.iter().all(|r| !r["tag"].is_null()),
        "untagged rows without --untagged"
    );
    // Artifacts are told apart from images.
    let by_ref = tagged(&rows);
    let sig = fx
        .truth
        .tags
        .keys()
        .find(|k| k.ends_with(".sig"))
        .expect("a signature tag");
    assert_eq!(by_ref[sig]["type"], "signature");
    assert_eq!(by_ref["charts/mychart:0.1.0"]["type"], "helm");
    // The summary is on stderr and counts what the tree holds.
    let repositories = fx.truth.repositories().len();
    assert!(
        stderr.contains(&format!(
            "{repositories} repositories, {} tags",
            fx.truth.tags.len()
        )),
        "{stderr}"
    );
    let upload = &fx.truth.uploads[0];
    assert!(
        stderr.contains(&upload.uuid),
        "unfinished upload not reported: {stderr}"
    );
    assert_eq!(
        snapshot(fx.root()),
        before,
        "ferry list changed the source tree"
    );
}

#[test]
fn untagged_adds_exactly_the_untagged_manifests() {
    let fx = standard_tree(12);
    let (code, rows, stderr) = list_json(fx.root(), &["--untagged"]);
    assert_eq!(code, 0, "{stderr}");
    let untagged: BTreeSet<(String, String)> = rows
        .iter()
        .filter(|r| r["tag"].is_null())
        .map(|r| {
            (
                r["repository"].as_str().unwrap().to_string(),
                r["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = fx
        .truth
        .untagged
        .iter()
        .map(|u| (u.repository.clone(), u.digest.clone()))
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(untagged, expected);
    assert_matches_truth(&fx.truth, &rows);
    let images = ferry()
        .arg("list")
        .arg(fx.root())
        .args(["--untagged", "--format", "images"])
        .output()
        .unwrap();
    let text = String::from_utf8(images.stdout).unwrap();
    for u in &fx.truth.untagged {
        assert!(
            text.contains(&format!("{}@{}\n", u.repository, u.digest)),
            "{text}"
        );
    }
}

#[test]
fn shipped_testdata_lists_as_its_truth_from_every_entry_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/registry");
    let truth = ferry_testkit::Truth::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/registry.truth.json"),
    )
    .unwrap();
    for entry in [
        root.clone(),
        root.join("docker"),
        root.join("docker/registry/v2"),
    ] {
        let (code, rows, stderr) = list_json(&entry, &[]);
        assert_eq!(code, 0, "{}: {stderr}", entry.display());
        assert_matches_truth(&truth, &rows);
    }
    let table = ferry().arg("list").arg(&root).output().unwrap();
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.starts_with("REPOSITORY"), "{text}");
    assert_eq!(text.lines().count(), truth.tags.len() + 1, "{text}");
    assert!(
        text.contains("linux/amd64,linux/arm64,linux/arm/v7"),
        "{text}"
    );
}

fn images_list(root: &Path, extra: &[&str]) -> Vec<String> {
    let out = ferry()
        .arg("list")
        .arg(root)
        .args(["--format", "images"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn truth_refs(fx: &Fixture, keep: impl Fn(&str, &str) -> bool) -> Vec<String> {
    fx.truth
        .tags
        .values()
        .filter(|i| keep(&i.repository, &i.tag))
        .map(|i| format!("{}:{}", i.repository, i.tag))
        .collect()
}

#[test]
fn filters_select_repositories_tags_and_image_lists() {
    let fx = standard_tree(13);
    let root = fx.root();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // `*` stays within one component, `**` crosses.
    assert_eq!(
        sorted(images_list(root, &["--repo", "ns/*"])),
        sorted(truth_refs(&fx, |r, _| r == "ns/sub"))
    );
    assert_eq!(
        sorted(images_list(root, &["--repo", "ns/**"])),
        sorted(truth_refs(&fx, |r, _| r.starts_with("ns/")))
    );
    assert_eq!(
        sorted(images_list(
            root,
            &["--exclude", "ns/**", "--exclude", "alpine"]
        )),
        sorted(truth_refs(&fx, |r, _| !r.starts_with("ns/") && r != "alpine"))
    );
    assert_eq!(
        sorted(images_list(root, &["--tag", "1.*"])),
        sorted(truth_refs(&fx, |_, t| t.starts_with("1.")))
    );
    // An image list selects exactly its lines; a line not in the tree is reported broken.
    let list_file = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        list_file.path(),
        "# retry these\nalpine:latest\n\norg/team/sub/app:1.0\nalpine:gone\n",
    )
    .unwrap();
    let (code, rows, stderr) = list_json(root, &["--images", list_file.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let by_ref = tagged(&rows);
    assert_eq!(
        by_ref.keys().cloned().collect::<Vec<_>>(),
        ["alpine:gone", "alpine:latest", "org/team/sub/app:1.0"]
    );
    assert_eq!(by_ref["alpine:latest"]["status"], "ok");
    assert_eq!(by_ref["alpine:gone"]["status"], "broken");
    assert!(
        stderr.contains("alpine:gone: not found in the source tree"),
        "{stderr}"
    );
    // A malformed list is a usage problem: exit 2, naming the line.
    fs::write(list_file.path(), "alpine\n").unwrap();
    let out = ferry()
        .arg("list")
        .arg(root)
        .arg("--images")
        .arg(list_file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":1: \"alpine\""));
}

#[test]
fn damaged_tree_lists_broken_tags_naming_the_file_and_everything_else() {
    let fx = standard_tree(14);
    let root = fx.root();
    let t = &fx.truth.tags;
    // 1. A tag link with a trailing newline (hand-edited) is damaged.
    let bad_link = tree::tag_current_link(root, "ns/sub", "1.0");
    fs::write(&bad_link, format!("{}\n", t["ns/sub:1.0"].digest)).unwrap();
    // 2. A missing manifest blob.
    let missing = tree::blob_data(root, &t["ns/sub/img:2.0"].digest);
    fs::remove_file(&missing).unwrap();
    // 3. A truncated manifest.
    let truncated = tree::blob_data(root, &t["charts/mychart:0.1.0"].digest);
    let bytes = fs::read(&truncated).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // 4. A missing child of an index.
    let child = &t["multi/oci-app:1.0"].children[1];
    let child_file = tree::blob_data(root, child);
    fs::remove_file(&child_file).unwrap();
    // 5. A missing layer that only one image uses.
    let layer = t["legacy/foreign:1.0"]
        .blobs
        .iter()
        .skip(1)
        .find(|b| {
            t.iter()
                .filter(|(r, _)| r.as_str() != "legacy/foreign:1.0")
                .all(|(_, i)| i.blobs.iter().all(|o| o.digest != b.digest))
        })
        .expect("a layer of legacy/foreign no other image uses");
    let layer_file = tree::blob_data(root, &layer.digest);
    fs::remove_file(&layer_file).unwrap();

    let (code, rows, stderr) = list_json(root, &[]);
    assert_eq!(code, 1, "{stderr}");
    let by_ref = tagged(&rows);
    let expect_broken = |reference: &str, needles: &[&str]| {
        let row = by_ref[reference];
        assert_eq!(row["status"], "broken", "{reference}");
        let problems = row["problems"].to_string();
        for n in needles {
            assert!(problems.contains(n), "{reference}: {problems} lacks {n}");
        }
    };
    expect_broken(
        "ns/sub:1.0",
        &[
            "damaged link",
            bad_link.to_str().unwrap(),
            "sha256:<64 lowercase hex>",
        ],
    );
    expect_broken("ns/sub/img:2.0", &["is missing", missing.to_str().unwrap()]);
    expect_broken(
        "charts/mychart:0.1.0",
        &["is corrupt", truncated.to_str().unwrap()],
    );
    expect_broken(
        "multi/oci-app:1.0",
        &[child.as_str(), "linux/arm64", child_file.to_str().unwrap()],
    );
    expect_broken(
        "legacy/foreign:1.0",
        &["layer", &layer.digest, layer_file.to_str().unwrap()],
    );
    let broken: BTreeSet<&str> = [
        "ns/sub:1.0",
        "ns/sub/img:2.0",
        "charts/mychart:0.1.0",
        "multi/oci-app:1.0",
        "legacy/foreign:1.0",
    ]
    .into();
    for (reference, row) in &by_ref {
        if !broken.contains(reference.as_str()) {
            assert_eq!(row["status"], "ok", "{reference}: {}", row["problems"]);
        }
    }
    assert_eq!(by_ref.len(), t.len(), "every tag is still listed");
    assert!(stderr.contains("5 broken"), "{stderr}");
}

#[test]
fn a_path_that_is_not_a_storage_tree_exits_2_saying_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry().arg("list").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a registry storage tree"),
        "{stderr}"
    );
    assert!(stderr.contains("docker/registry/v2"), "{stderr}");

    let missing = dir.path().join("nope");
    let out = ferry().arg("list").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // A gzip stream (told by content) that holds no tar: the damage is named.
    let gz = dir.path().join("registry.bin");
    fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    let out = ferry().arg("list").arg(&gz).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds no registry storage tree"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot be read"), "{stderr}");

    // Archives ferry cannot read are named as such.
    let bz = dir.path().join("registry.tar");
    fs::write(&bz, b"BZh91AY&SY").unwrap();
    let out = ferry().arg("list").arg(&bz).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bzip2 archive"));
}

#[test]
fn symlinks_are_not_followed_out_of_the_tree() {
    let fx = standard_tree(15);
    let root = fx.root();
    let outside = tempfile::tempdir().unwrap();
    // A repository folder that is a symlink to another tree's repository is not a repository here.
    let elsewhere = standard_tree(16);
    std::os::unix::fs::symlink(
        tree::repo_dir(elsewhere.root(), "alpine"),
        tree::repo_dir(root, "linked"),
    )
    .unwrap();
    // A manifest blob replaced by a symlink to a file outside the tree is not read.
    let digest = &fx.truth.tags["ns/sub/img:2.0"].digest;
    let data = tree::blob_data(root, digest);
    let copy = outside.path().join("data");
    fs::copy(&data, &copy).unwrap();
    fs::remove_file(&data).unwrap();
    std::os::unix::fs::symlink(&copy, &data).unwrap();

    // A repository's `_manifests/tags` replaced by a link to another tree's tags.
    let tags = tree::repo_dir(root, "ns/sub").join("_manifests/tags");
    fs::rename(&tags, outside.path().join("ns-sub-tags")).unwrap();
    std::os::unix::fs::symlink(
        tree::repo_dir(elsewhere.root(), "alpine").join("_manifests/tags"),
        &tags,
    )
    .unwrap();
    // A tag's `current` folder replaced by a link to another tag's.
    let current = tree::tag_current_link(root, "org/team/sub/app", "1.0");
    let current = current.parent().unwrap();
    fs::rename(current, outside.path().join("current")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("current"), current).unwrap();

    let (code, rows, stderr) = list_json(root, &[]);
    assert_eq!(code, 1, "{stderr}");
    let by_ref = tagged(&rows);
    assert!(
        by_ref.keys().all(|k| !k.starts_with("linked")),
        "{:?}",
        by_ref.keys()
    );
    // Nothing was read through the links; each is reported, naming it.
    assert!(
        by_ref.keys().all(|k| !k.starts_with("ns/sub:")),
        "tags read through a linked _manifests/tags: {:?}",
        by_ref.keys()
    );
    for link in [tree::repo_dir(root, "linked"), tags.clone()] {
        let shown = format!("{} is a symbolic link", link.display());
        assert!(stderr.contains(&shown), "{shown} not in:\n{stderr}");
    }
    assert_eq!(by_ref["org/team/sub/app:1.0"]["status"], "broken");
    assert!(
        by_ref["org/team/sub/app:1.0"]["problems"]
            .to_string()
            .contains("is a symbolic link"),
        "{}",
        by_ref["org/team/sub/app:1.0"]["problems"]
    );
    assert_eq!(by_ref["ns/sub/img:2.0"]["status"], "broken");
    assert!(
        by_ref["ns/sub/img:2.0"]["problems"]
            .to_string()
            .contains("is a symbolic link"),
        "{}",
        by_ref["ns/sub/img:2.0"]["problems"]
    );
}

#[test]
fn a_repository_folder_with_an_invalid_name_breaks_its_tags_only() {
    let fx = standard_tree(17);
    let root = fx.root();
    // Hand-made damage: a repository folder renamed to something Distribution never writes.
    fs::rename(
        tree::repo_dir(root, "alpine"),
        tree::repo_dir(root, "Alpine..x"),
    )
    .unwrap();
    let (code, rows, stderr) = list_json(root, &[]);
    assert_eq!(code, 1, "{stderr}");
    let by_ref = tagged(&rows);
    let bad: Vec<&String> = by_ref
        .keys()
        .filter(|k| k.starts_with("Alpine..x:"))
        .collect();
    assert_eq!(
        bad.len(),
        fx.truth
            .tags
            .keys()
            .filter(|k| k.starts_with("alpine:"))
            .count()
    );
    for reference in bad {
        assert_eq!(by_ref[reference]["status"], "broken");
        assert!(
            by_ref[reference]["problems"]
                .to_string()
                .contains("invalid repository name"),
            "{}",
            by_ref[reference]["problems"]
        );
    }
    for (reference, row) in &by_ref {
        if !reference.starts_with("Alpine") {
            assert_eq!(row["status"], "ok", "{reference}");
        }
    }
}

#[test]
fn names_with_control_characters_never_break_a_line_and_come_back_through_images() {
    let fx = standard_tree(18);
    let root = fx.root();
    // Hand-made damage: a tag folder whose name holds a newline (Distribution never writes one).
    let tags = tree::repo_dir(root, "alpine").join("_manifests/tags");
    fs::rename(tags.join("3.19"), tags.join("3.19\nINJECTED")).unwrap();
    let out = ferry()
        .arg("list")
        .arg(root)
        .args(["--format", "images"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for text in [&stdout, &stderr] {
        assert!(
            text.lines().all(|l| !l.starts_with("INJECTED")),
            "a name broke a line:\n{text}"
        );
    }
    let quoted: Vec<&str> = stdout.lines().filter(|l| l.starts_with('"')).collect();
    assert_eq!(quoted, [r#""alpine:3.19\nINJECTED""#], "{stdout}");

    // The failed list of a push holds the same line, and --images reads it back: the one image
    // it names is selected again (and fails again, for the same reason).
    let reg = ferry_testkit::Registry::start().unwrap();
    let dir = crate::util::workdir();
    let ran = crate::util::run(&mut crate::util::push_cmd(
        root,
        &reg.url(),
        dir.path(),
        &[],
    ));
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    let failed = fs::read_to_string(dir.path().join("failed.txt")).unwrap();
    assert_eq!(failed, "\"alpine:3.19\\nINJECTED\"\n");
    let again = crate::util::run(&mut crate::util::push_cmd(
        root,
        &reg.url(),
        dir.path(),
        &["--images", dir.path().join("failed.txt").to_str().unwrap()],
    ));
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("0 pushed, 0 skipped, 1 failed"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.lines().all(|l| !l.starts_with("INJECTED")),
        "{}",
        again.stderr
    );
}
