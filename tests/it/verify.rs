//! `ferry verify` against trees written by docker-registry and then damaged on purpose: exactly
//! the tags each damage breaks, with the right reason, and the tree left byte for byte as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use ferry_testkit::{Registry, Truth, generate_standard, tree};
use serde_json::Value;

use crate::util::{Fixture, ferry, sha256, snapshot, standard_tree};

/// What one `ferry verify --format json` run said.
struct Verified {
    code: i32,
    json: Value,
    stderr: String,
    failed: BTreeSet<String>,
}

impl Verified {
    /// Broken images (`repo:tag` or `repo@digest`) and their problems.
    fn broken(&self) -> BTreeMap<String, Vec<Value>> {
        self.images()
            .filter(|i| i["status"] == "broken")
            .map(|i| (reference(i), i["problems"].as_array().unwrap().clone()))
            .collect()
    }

    /// Every image reference and its status.
    fn statuses(&self) -> BTreeMap<String, String> {
        self.images()
            .map(|i| (reference(i), i["status"].as_str().unwrap().to_string()))
            .collect()
    }

    fn images(&self) -> impl Iterator<Item = &Value> {
        self.json["images"].as_array().unwrap().iter()
    }

    /// Findings of one kind.
    fn findings(&self, kind: &str) -> Vec<&Value> {
        self.json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == kind)
            .collect()
    }

    /// Digests listed under `blobs.<list>`.
    fn blob_list(&self, list: &str) -> BTreeSet<String> {
        self.json["blobs"][list]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["digest"].as_str().unwrap().to_string())
            .collect()
    }
}

fn reference(image: &Value) -> String {
    let repo = image["repository"].as_str().unwrap();
    match image["tag"].as_str() {
        Some(tag) => format!("{repo}:{tag}"),
        None => format!("{repo}@{}", image["digest"].as_str().unwrap()),
    }
}

/// Runs `ferry verify ROOT --format json` with extra arguments; the failed list goes to a temp dir.
fn verify(root: &Path, extra: &[&str]) -> Verified {
    let lists = tempfile::tempdir().unwrap();
    let failed = lists.path().join("failed.txt");
    let out = ferry()
        .arg("verify")
        .arg(root)
        .args(["--format", "json", "-o"])
        .arg(&failed)
        .args(extra)
        .output()
        .expect("ferry runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Verified {
        code: out.status.code().expect("exit code"),
        json,
        stderr,
        failed: fs::read_to_string(&failed)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

/// A copy of the fixture's tree (as docker-registry wrote it) to damage; the root is `DIR/root`.
fn copy_of(fx: &Fixture) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    tree::copy_tree(fx.root(), &root).unwrap();
    (dir, root)
}

/// Runs verify on `root` twice as the tree is compared: the tree must be unchanged afterwards.
fn verify_untouched(root: &Path, extra: &[&str]) -> Verified {
    let before = snapshot(root);
    let v = verify(root, extra);
    assert_eq!(snapshot(root), before, "ferry verify changed the tree");
    v
}

/// Tags whose image needs `digest`: as its manifest, an index child, a config or a layer.
fn tags_needing(truth: &Truth, digest: &str) -> BTreeSet<String> {
    truth
        .tags
        .iter()
        .filter(|(_, t)| {
            t.digest == digest
                || t.children.iter().any(|c| c == digest)
                || t.blobs.iter().any(|b| b.digest == digest)
        })
        .map(|(r, _)| r.clone())
        .collect()
}

/// How many tags' images use each config or layer.
fn blob_use(truth: &Truth) -> BTreeMap<String, usize> {
    let mut uses = BTreeMap::new();
    for t in truth.tags.values() {
        for b in &t.blobs {
            *uses.entry(b.digest.clone()).or_default() += 1;
        }
    }
    uses
}

/// The last blob of `tag` that no other tag uses (its own top layer).
fn own_layer(truth: &Truth, tag: &str) -> String {
    let uses = blob_use(truth);
    truth.tags[tag]
        .blobs
        .iter()
        .rev()
        .find(|b| uses[&b.digest] == 1)
        .unwrap_or_else(|| panic!("{tag} has a blob of its own"))
        .digest
        .clone()
}

fn flip_byte(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// Asserts that exactly `expected` are broken, each with a problem of `kind` about `digest`,
/// that every other selected tag is ok, and that the failed list names exactly the broken ones.
fn assert_breaks(v: &Verified, expected: &BTreeSet<String>, kind: &str, digest: &str, what: &str) {
    let broken = v.broken();
    let names: BTreeSet<String> = broken.keys().cloned().collect();
    assert_eq!(&names, expected, "{what}: broken tags\n{}", v.stderr);
    for (reference, problems) in &broken {
        assert!(
            problems
                .iter()
                .any(|p| p["kind"] == kind && p["digest"] == digest),
            "{what}: {reference} lacks a {kind} problem about {digest}: {problems:#?}"
        );
    }
    for (reference, status) in v.statuses() {
        if !expected.contains(&reference) {
            assert_eq!(status, "ok", "{what}: {reference} should be intact");
        }
    }
    assert_eq!(&v.failed, expected, "{what}: failed list");
    assert_eq!(
        v.code,
        if expected.is_empty() { 0 } else { 1 },
        "{what}: exit code\n{}",
        v.stderr
    );
}

#[test]
fn an_intact_tree_is_all_ok_every_blob_hashed_once_and_untouched() {
    let fx = standard_tree(21);
    let v = verify_untouched(fx.root(), &[]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    let tags: BTreeSet<String> = fx.truth.tags.keys().cloned().collect();
    let statuses = v.statuses();
    assert_eq!(statuses.keys().cloned().collect::<BTreeSet<_>>(), tags);
    assert!(statuses.values().all(|s| s == "ok"), "{statuses:?}");
    for image in v.images() {
        assert_eq!(
            image["digest"].as_str().unwrap(),
            fx.truth.tags[&reference(image)].digest,
            "{}",
            reference(image)
        );
    }
    // Every config, layer and manifest the tags need, each once, with its bytes.
    let mut needed: BTreeMap<String, u64> = fx.truth.all_blobs().into_iter().collect();
    for t in fx.truth.tags.values() {
        for m in std::iter::once(&t.digest).chain(&t.children) {
            let len = fs::metadata(tree::blob_data(fx.root(), m)).unwrap().len();
            needed.insert(m.clone(), len);
        }
    }
    assert_eq!(
        v.json["blobs"]["checked"],
        needed.len(),
        "{}",
        v.json["blobs"]
    );
    assert_eq!(v.json["blobs"]["bytes"], needed.values().sum::<u64>());
    for list in ["corrupt", "missing", "unreadable"] {
        assert!(v.blob_list(list).is_empty(), "{list}: {}", v.json["blobs"]);
    }
    // The untagged revisions and the unfinished upload are findings; nothing else is.
    let untagged: BTreeSet<(String, String)> = v
        .findings("untagged-revision")
        .iter()
        .map(|f| {
            (
                f["repository"].as_str().unwrap().to_string(),
                f["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = fx
        .truth
        .untagged
        .iter()
        .map(|u| (u.repository.clone(), u.digest.clone()))
        .collect();
    assert_eq!(untagged, expected);
    let uploads = v.findings("unfinished-upload");
    assert_eq!(uploads.len(), 1);
    assert!(
        uploads[0]["message"]
            .as_str()
            .unwrap()
            .contains(&fx.truth.uploads[0].uuid)
    );
    assert_eq!(
        v.json["findings"].as_array().unwrap().len(),
        untagged.len() + 1,
        "{:#}",
        v.json["findings"]
    );
    // Foreign layers are noted, not problems.
    let foreign = v
        .images()
        .find(|i| reference(i) == "legacy/foreign:1.0")
        .unwrap();
    assert!(
        foreign["notes"][0]
            .as_str()
            .unwrap()
            .contains("foreign layer"),
        "{foreign}"
    );
    assert!(v.failed.is_empty());
    assert!(v.stderr.contains("intact, 0 broken"), "{}", v.stderr);
}

#[test]
fn layer_damage_breaks_exactly_the_tags_that_need_the_layer() {
    let fx = standard_tree(22);
    let uses = blob_use(&fx.truth);
    let shared = uses.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    assert!(
        tags_needing(&fx.truth, &shared).len() > 2,
        "a layer most tags share"
    );

    // A flipped byte in a layer most tags share breaks all of them, as corrupt.
    let (_dir, root) = copy_of(&fx);
    let file = tree::blob_data(&root, &shared);
    flip_byte(&file);
    let actual = sha256(&fs::read(&file).unwrap());
    let v = verify_untouched(&root, &[]);
    let expected = tags_needing(&fx.truth, &shared);
    assert_breaks(
        &v,
        &expected,
        "corrupt-blob",
        &shared,
        "flipped shared layer",
    );
    let problem = v.broken()["ns/sub:v1"]
        .iter()
        .find(|p| p["kind"] == "corrupt-blob")
        .cloned()
        .unwrap();
    assert_eq!(problem["actual_digest"], actual.as_str(), "{problem}");
    assert_eq!(
        problem["path"],
        file.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(v.blob_list("corrupt"), BTreeSet::from([shared.clone()]));

    // A flipped byte in a layer of one image breaks that image alone, not those sharing its other layers.
    let own = own_layer(&fx.truth, "ns/sub:1.0");
    let (_dir, root) = copy_of(&fx);
    flip_byte(&tree::blob_data(&root, &own));
    let v = verify_untouched(&root, &[]);
    assert_breaks(
        &v,
        &BTreeSet::from(["ns/sub:1.0".to_string()]),
        "corrupt-blob",
        &own,
        "flipped own layer",
    );
    assert_eq!(
        v.statuses()["ns/sub/img:2.0"],
        "ok",
        "shares the runtime layer with ns/sub:1.0"
    );

    // A deleted layer: missing, and the repositories' links to it dangle.
    let own = own_layer(&fx.truth, "ns/sub/img:2.0");
    let (_dir, root) = copy_of(&fx);
    fs::remove_dir_all(tree::blob_data(&root, &own).parent().unwrap()).unwrap();
    let v = verify_untouched(&root, &[]);
    assert_breaks(
        &v,
        &BTreeSet::from(["ns/sub/img:2.0".to_string()]),
        "missing-blob",
        &own,
        "deleted layer",
    );
    assert_eq!(v.blob_list("missing"), BTreeSet::from([own.clone()]));
    let dangling: Vec<&Value> = v.findings("dangling-layer-link");
    assert_eq!(dangling.len(), 1, "{dangling:?}");
    assert_eq!(dangling[0]["repository"], "ns/sub/img");
    assert_eq!(dangling[0]["digest"], own.as_str());

    // A layer that grew by a byte: a size mismatch (and so corrupt too).
    let own = own_layer(&fx.truth, "legacy/foreign:1.0");
    let (_dir, root) = copy_of(&fx);
    let file = tree::blob_data(&root, &own);
    let mut bytes = fs::read(&file).unwrap();
    bytes.push(b'!');
    fs::write(&file, &bytes).unwrap();
    let v = verify_untouched(&root, &[]);
    assert_breaks(
        &v,
        &BTreeSet::from(["legacy/foreign:1.0".to_string()]),
        "size-mismatch",
        &own,
        "grown layer",
    );
    let problems = &v.broken()["legacy/foreign:1.0"];
    let size = problems
        .iter()
        .find(|p| p["kind"] == "size-mismatch")
        .unwrap();
    assert_eq!(size["actual_size"], bytes.len());
    assert_eq!(size["expected_size"], bytes.len() - 1);
    assert!(
        problems.iter().any(|p| p["kind"] == "corrupt-blob"),
        "{problems:#?}"
    );

    // Two damages in one image: both are named, not only the first.
    let tag = "ns/sub:v1";
    let config = fx.truth.tags[tag].blobs[0].digest.clone();
    let own = own_layer(&fx.truth, tag);
    assert_ne!(config, own);
    let (_dir, root) = copy_of(&fx);
    flip_byte(&tree::blob_data(&root, &config));
    fs::remove_file(tree::blob_data(&root, &own)).unwrap();
    let v = verify_untouched(&root, &[]);
    let broken = v.broken();
    assert_eq!(broken.keys().collect::<Vec<_>>(), [tag]);
    let found: BTreeSet<(String, String)> = broken[tag]
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        found,
        BTreeSet::from([
            ("corrupt-blob".to_string(), config),
            ("missing-blob".to_string(), own)
        ]),
        "{:#?}",
        broken[tag]
    );
}

#[test]
fn manifest_and_link_damage_breaks_exactly_the_tags_that_need_them() {
    let fx = standard_tree(23);
    let truth = &fx.truth;

    // A deleted index child breaks its index, as a missing child.
    let index = "org/team/sub/app:1.0";
    let child = truth.tags[index].children[1].clone();
    let (_dir, root) = copy_of(&fx);
    fs::remove_file(tree::blob_data(&root, &child)).unwrap();
    let v = verify_untouched(&root, &[]);
    assert_breaks(
        &v,
        &tags_needing(truth, &child),
        "missing-child",
        &child,
        "deleted index child",
    );
    let problem = &v.broken()[index][0];
    assert!(
        problem["within"].as_str().unwrap().contains("linux/arm64"),
        "{problem}"
    );

    // A truncated manifest: corrupt, for every tag pointing at it (alpine's two tags share one).
    let digest = truth.tags["alpine:3.19"].digest.clone();
    let (_dir, root) = copy_of(&fx);
    let file = tree::blob_data(&root, &digest);
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let v = verify_untouched(&root, &[]);
    let expected = tags_needing(truth, &digest);
    assert_eq!(expected.len(), 2);
    assert_breaks(
        &v,
        &expected,
        "corrupt-manifest",
        &digest,
        "truncated manifest",
    );
    assert_eq!(
        v.broken()["alpine:latest"][0]["actual_size"],
        bytes.len() / 2
    );

    // A truncated index child: corrupt, and shorter than its index says.
    let child = truth.tags["multi/oci-app:1.0"].children[0].clone();
    let (_dir, root) = copy_of(&fx);
    let file = tree::blob_data(&root, &child);
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let v = verify_untouched(&root, &[]);
    assert_breaks(
        &v,
        &tags_needing(truth, &child),
        "corrupt-manifest",
        &child,
        "truncated child",
    );
    let problems = &v.broken()["multi/oci-app:1.0"];
    assert!(
        problems.iter().any(|p| p["kind"] == "size-mismatch"
            && p["expected_size"] == bytes.len()
            && p["actual_size"] == bytes.len() - 10),
        "{problems:#?}"
    );

    // A tag link with garbage in it breaks that tag only, not the other tag on the same manifest.
    let (_dir, root) = copy_of(&fx);
    let link = tree::tag_current_link(&root, "alpine", "latest");
    fs::write(&link, b"sha256:not a digest\n").unwrap();
    let v = verify_untouched(&root, &[]);
    let broken = v.broken();
    assert_eq!(broken.keys().collect::<Vec<_>>(), ["alpine:latest"]);
    assert_eq!(broken["alpine:latest"][0]["kind"], "bad-link");
    assert_eq!(
        broken["alpine:latest"][0]["path"],
        link.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(v.statuses()["alpine:3.19"], "ok");
    assert_eq!(v.code, 1);

    // A tag link to a manifest the tree does not hold.
    let (_dir, root) = copy_of(&fx);
    let nowhere = sha256(b"a manifest that was never stored");
    fs::write(tree::tag_current_link(&root, "ns/sub", "1.0"), &nowhere).unwrap();
    let v = verify_untouched(&root, &[]);
    assert_breaks(
        &v,
        &BTreeSet::from(["ns/sub:1.0".to_string()]),
        "missing-manifest",
        &nowhere,
        "link to nowhere",
    );
    assert_eq!(v.blob_list("missing"), BTreeSet::from([nowhere]));
}

#[test]
fn tree_findings_are_named_and_symlinks_are_never_followed() {
    let fx = standard_tree(24);
    let truth = &fx.truth;

    // An emptied repository folder: no tag breaks; its blobs are orphans, exactly those.
    let (_dir, root) = copy_of(&fx);
    let chart = tree::repo_dir(&root, "charts/mychart");
    fs::remove_dir_all(&chart).unwrap();
    fs::create_dir(&chart).unwrap();
    let stray_blob = tree::v2_dir(&root).join("blobs/sha256/README");
    fs::write(&stray_blob, b"notes").unwrap();
    let stray_repo = tree::repo_dir(&root, "alpine").join("_manifests/notes.txt");
    fs::write(&stray_repo, b"notes").unwrap();
    let v = verify_untouched(&root, &[]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.broken().is_empty());
    assert!(!v.statuses().contains_key("charts/mychart:0.1.0"));
    let empty = v.findings("empty-repository");
    assert_eq!(empty.len(), 1, "{empty:?}");
    assert_eq!(
        empty[0]["path"],
        chart.canonicalize().unwrap().to_str().unwrap()
    );
    let chart_image = &truth.tags["charts/mychart:0.1.0"];
    let mut lost: BTreeSet<String> = chart_image.blobs.iter().map(|b| b.digest.clone()).collect();
    lost.insert(chart_image.digest.clone());
    let orphans: BTreeSet<String> = v
        .findings("orphan-blob")
        .iter()
        .map(|f| f["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(orphans, lost);
    let strays: BTreeSet<String> = v
        .findings("stray-file")
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = [&stray_blob, &stray_repo]
        .iter()
        .map(|p| p.canonicalize().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(strays, want);

    // --all-blobs hashes the orphans too, and finds a flipped byte in one.
    let orphan_layer = chart_image.blobs[1].digest.clone();
    flip_byte(&tree::blob_data(&root, &orphan_layer));
    let v = verify_untouched(&root, &[]);
    assert!(
        v.blob_list("corrupt").is_empty(),
        "not read without --all-blobs"
    );
    let checked = v.json["blobs"]["checked"].as_u64().unwrap();
    let all = verify_untouched(&root, &["--all-blobs"]);
    assert_eq!(all.code, 0, "an orphan breaks no tag: {}", all.stderr);
    assert_eq!(all.blob_list("corrupt"), BTreeSet::from([orphan_layer]));
    let stored = walkdir::WalkDir::new(tree::v2_dir(&root).join("blobs"))
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_name() == "data")
        .count() as u64;
    assert_eq!(all.json["blobs"]["checked"], stored);
    assert!(stored > checked);

    // A layer replaced by a symbolic link out of the tree, to the right bytes: not followed.
    let outside = tempfile::tempdir().unwrap();
    let own = own_layer(truth, "ns/sub:v1");
    let (_dir, root) = copy_of(&fx);
    let data = tree::blob_data(&root, &own);
    let target = outside.path().join("layer");
    fs::rename(&data, &target).unwrap();
    std::os::unix::fs::symlink(&target, &data).unwrap();
    // The same through a linked folder: the blob's folder is a link to a folder outside.
    let other = own_layer(truth, "ns/sub/img:2.0");
    let folder = tree::blob_data(&root, &other)
        .parent()
        .unwrap()
        .to_path_buf();
    let moved = outside.path().join("folder");
    fs::rename(&folder, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &folder).unwrap();
    let outside_before = snapshot(outside.path());
    let v = verify_untouched(&root, &[]);
    assert_eq!(snapshot(outside.path()), outside_before);
    let broken = v.broken();
    assert_eq!(
        broken.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["ns/sub:v1".to_string(), "ns/sub/img:2.0".to_string()]),
        "{}",
        v.stderr
    );
    let canon = |p: &Path| {
        fs::canonicalize(p.parent().unwrap())
            .unwrap()
            .join(p.file_name().unwrap())
            .to_str()
            .unwrap()
            .to_string()
    };
    for (tag, link) in [("ns/sub:v1", &data), ("ns/sub/img:2.0", &folder)] {
        let p = &broken[tag][0];
        assert_eq!(p["kind"], "symlink", "{tag}: {p}");
        assert_eq!(p["path"], canon(link).as_str(), "{tag}");
    }
    let links: BTreeSet<String> = v
        .findings("symlink")
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(links, BTreeSet::from([canon(&data), canon(&folder)]));
    assert_eq!(v.code, 1);
}

#[test]
fn untagged_revisions_are_checked_as_images_with_untagged() {
    let fx = standard_tree(25);
    let loose = fx
        .truth
        .untagged
        .iter()
        .find(|u| u.repository == "ns/sub/img")
        .unwrap()
        .clone();
    let manifest: Value =
        serde_json::from_slice(&fs::read(tree::blob_data(fx.root(), &loose.digest)).unwrap())
            .unwrap();
    let uses = blob_use(&fx.truth);
    let own = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .find(|d| !uses.contains_key(d))
        .expect("a layer only the untagged image has");
    let (_dir, root) = copy_of(&fx);
    flip_byte(&tree::blob_data(&root, &own));

    // Without --untagged the damage is not read: the revision is a finding, the tags are intact.
    let v = verify_untouched(&root, &[]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(
        v.findings("untagged-revision")
            .iter()
            .any(|f| f["digest"] == loose.digest.as_str())
    );

    let v = verify_untouched(&root, &["--untagged"]);
    let name = format!("ns/sub/img@{}", loose.digest);
    assert_breaks(
        &v,
        &BTreeSet::from([name.clone()]),
        "corrupt-blob",
        &own,
        "untagged image",
    );
    assert!(v.findings("untagged-revision").is_empty());
    let other = fx
        .truth
        .untagged
        .iter()
        .find(|u| u.repository == "ns/sub")
        .unwrap();
    assert_eq!(v.statuses()[&format!("ns/sub@{}", other.digest)], "ok");

    // The failed list is an --images file the other commands take.
    let lists = tempfile::tempdir().unwrap();
    let failed = lists.path().join("failed.txt");
    fs::write(&failed, format!("{name}\n")).unwrap();
    let out = ferry()
        .arg("list")
        .arg(&root)
        .args(["--untagged", "--format", "images", "--images"])
        .arg(&failed)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{name}\n"));
}

#[test]
fn a_lone_blob_pushed_without_a_manifest_is_an_orphan() {
    let registry = Registry::start().expect("docker-registry starts");
    let truth = generate_standard(&registry, 26).expect("standard scenario");
    let pusher = ferry_testkit::Pusher::new(&registry);
    let lone = pusher
        .push_blob("alpine", b"a layer whose manifest never came")
        .unwrap();
    let stopped = registry.stop().unwrap();
    let v = verify_untouched(stopped.root(), &[]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    let orphans: Vec<&Value> = v.findings("orphan-blob");
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(orphans[0]["digest"], lone.digest.as_str());
    assert_eq!(v.statuses().len(), truth.tags.len());
}

#[test]
fn table_on_stderr_exit_codes_and_report() {
    let fx = standard_tree(27);
    let (dir, root) = copy_of(&fx);
    let own = own_layer(&fx.truth, "ns/sub:1.0");
    flip_byte(&tree::blob_data(&root, &own));
    let report = dir.path().join("report.json");
    let out = ferry()
        .current_dir(dir.path())
        .arg("verify")
        .arg(&root)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the table goes to stderr");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let row = stderr
        .lines()
        .find(|l| l.starts_with("ns/sub:1.0 "))
        .expect("a row per image");
    assert!(row.ends_with("broken"), "{row}");
    assert!(
        stderr.contains(&format!(": blob {own} is corrupt")),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("verify-failed.txt")).unwrap(),
        "ns/sub:1.0\n"
    );
    let report: Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["command"], "verify");
    assert_eq!(report["blobs"]["corrupt"][0]["digest"], own.as_str());

    for bad in [dir.path().join("nothing-here"), dir.path().to_path_buf()] {
        let out = ferry().arg("verify").arg(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", bad.display());
    }
}

/// Registries the damaged-source pushes go to: one holding the whole pristine tree, one where
/// every repository that needs `layer` holds only a `seed` image made of its pristine bytes.
fn destinations(fx: &Fixture, layer: &str) -> (Registry, Registry) {
    let full = Registry::start().expect("docker-registry starts");
    let dir = tempfile::tempdir().unwrap();
    let ran = crate::util::run(&mut crate::util::push_cmd(
        fx.root(),
        &full.url(),
        dir.path(),
        &[],
    ));
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let seeded = Registry::start().expect("docker-registry starts");
    let pusher = ferry_testkit::Pusher::new(&seeded);
    let bytes = fs::read(tree::blob_data(fx.root(), layer)).unwrap();
    let platform = ferry_testkit::Platform::new("linux", "amd64", None);
    for t in tags_needing(&fx.truth, layer) {
        let repo = crate::util::default_destination(&fx.truth.tags[&t].repository);
        ferry_testkit::images::push_image(
            &pusher,
            &repo,
            Some("seed"),
            ferry_testkit::images::Format::Docker,
            &platform,
            &[&bytes],
            &[],
            None,
        )
        .unwrap();
        assert!(pusher.blob_exists(&repo, layer).unwrap(), "{repo}");
    }
    (full, seeded)
}

#[test]
fn push_verify_refuses_a_corrupt_source_blob_the_destination_already_holds() {
    let fx = standard_tree(28);
    let uses = blob_use(&fx.truth);
    let shared = uses.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    let expected = tags_needing(&fx.truth, &shared);
    let (full, seeded) = destinations(&fx, &shared);
    let (_copy, root) = copy_of(&fx);
    flip_byte(&tree::blob_data(&root, &shared));

    for dest in [&full, &seeded] {
        // Without --verify nothing reads the damaged file: the destination already has the blob.
        let dir = tempfile::tempdir().unwrap();
        let before = snapshot(&root);
        let ran = crate::util::run(&mut crate::util::push_cmd(
            &root,
            &dest.url(),
            dir.path(),
            &[],
        ));
        assert_eq!(ran.code, 0, "{}", ran.stderr);

        let ran = crate::util::run(&mut crate::util::push_cmd(
            &root,
            &dest.url(),
            dir.path(),
            &["--verify"],
        ));
        assert_eq!(snapshot(&root), before, "push changed the source tree");
        assert_eq!(ran.code, 1, "{}", ran.stderr);
        let failed: BTreeSet<String> = crate::util::failed_lines(&dir.path().join("failed.txt"))
            .into_iter()
            .collect();
        // A signature fails with its subject (it would point at nothing).
        let expected = crate::util::with_signatures(&fx.truth, &expected);
        assert_eq!(failed, expected, "{}", ran.stderr);
        assert!(
            ran.stderr.contains(&format!("blob {shared} is corrupt")),
            "{}",
            ran.stderr
        );
    }
    // The images that do not need the layer still arrive, digests kept.
    let pusher = ferry_testkit::Pusher::new(&seeded);
    for (name, tag) in fx.truth.tags.iter().filter(|(n, _)| !expected.contains(*n)) {
        let dest = crate::util::default_destination(&tag.repository);
        let got = pusher.get_manifest(&dest, &tag.tag).unwrap();
        assert_eq!(got.digest, tag.digest, "{name}");
    }
}
