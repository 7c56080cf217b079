//! `ferry export` against trees written by docker-registry, with skopeo reading what it wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_testkit::{Registry, TaggedImage, tree};
use serde_json::Value;

use crate::util::{Fixture, ferry, sha256, skopeo_raw, snapshot, standard_tree};

const VERSION: &[u8] = b"Directory Transport Version: 1.1\n";

/// What one `ferry export` run left behind.
struct Run {
    code: i32,
    stderr: String,
    failed: BTreeSet<String>,
}

/// Runs `ferry export SOURCE --out OUT`, with the failed list in its own temp dir.
fn export(source: &Path, out: &Path, extra: &[&str]) -> Run {
    let lists = tempfile::tempdir().unwrap();
    let failed = lists.path().join("failed.txt");
    let output = ferry()
        .arg("export")
        .arg(source)
        .arg("--out")
        .arg(out)
        .arg("-o")
        .arg(&failed)
        .args(extra)
        .output()
        .expect("ferry runs");
    Run {
        code: output.status.code().expect("exit code"),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        failed: fs::read_to_string(&failed)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

/// An output folder on the tree's filesystem (beside the storage root), removed with the fixture.
fn out_beside(fixture: &Fixture, name: &str) -> PathBuf {
    fixture.root().parent().unwrap().join(name)
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ino(path: &Path) -> (u64, u64) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.dev(), m.ino())
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The files a skopeo dir: folder of `image` holds: version, manifest.json, children, blobs.
fn expected_files(image: &TaggedImage) -> BTreeSet<String> {
    let mut files: BTreeSet<String> = ["version".to_string(), "manifest.json".to_string()].into();
    files.extend(
        image
            .children
            .iter()
            .map(|c| format!("{}.manifest.json", hex(c))),
    );
    files.extend(image.blobs.iter().map(|b| hex(&b.digest).to_string()));
    files
}

/// Image folders under `out` (those holding a `version` file), relative.
fn image_folders(out: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(out)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() == "version")
        .map(|e| {
            e.path()
                .parent()
                .unwrap()
                .strip_prefix(out)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// A blob exactly one tag uses, and that tag.
fn blob_of_one_tag(fixture: &Fixture, skip: &[&str]) -> (String, String) {
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (reference, image) in &fixture.truth.tags {
        for b in &image.blobs {
            users.entry(&b.digest).or_default().push(reference);
        }
    }
    users
        .into_iter()
        .find(|(_, u)| u.len() == 1 && !skip.contains(&u[0]))
        .map(|(d, u)| (d.to_string(), u[0].to_string()))
        .expect("a blob used by one tag only")
}

fn summary_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("images: "))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"))
}

#[test]
fn dir_layout_is_read_by_skopeo_and_keeps_every_digest() {
    let fx = standard_tree(11);
    let truth = &fx.truth;
    let before = snapshot(fx.root());
    let out = out_beside(&fx, "out");
    let run = export(fx.root(), &out, &["--untagged"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.failed.is_empty(), "{:?}", run.failed);
    assert_eq!(snapshot(fx.root()), before, "the source changed");

    let mut wanted: BTreeSet<String> = truth.tags.keys().cloned().collect();
    wanted.extend(
        truth
            .untagged
            .iter()
            .map(|u| format!("{}@{}", u.repository, u.digest)),
    );
    assert_eq!(image_folders(&out), wanted);
    assert!(
        run.stderr
            .contains("legacy/foreign:1.0: 1 foreign layer(s) not exported"),
        "{}",
        run.stderr
    );

    let registry = Registry::start().expect("docker-registry starts");
    for (reference, image) in &truth.tags {
        let folder = out.join(reference);
        assert_eq!(fs::read(folder.join("version")).unwrap(), VERSION);
        assert_eq!(names_in(&folder), expected_files(image), "{reference}");
        let dir_ref = format!("dir:{}", folder.display());
        assert_eq!(
            sha256(&skopeo_raw(&dir_ref)),
            image.digest,
            "skopeo inspect --raw {dir_ref}"
        );
        let dest = format!("docker://{}/{reference}", registry.host());
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &dir_ref,
            &dest,
        ]);
        assert_eq!(sha256(&skopeo_raw(&dest)), image.digest, "{dest}");
    }
    for untagged in &truth.untagged {
        let reference = format!("{}@{}", untagged.repository, untagged.digest);
        let dir_ref = format!("dir:{}", out.join(&reference).display());
        assert_eq!(sha256(&skopeo_raw(&dir_ref)), untagged.digest);
        let dest = format!("docker://{}/{reference}", registry.host());
        skopeo(&[
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &dir_ref,
            &dest,
        ]);
        assert_eq!(sha256(&skopeo_raw(&dest)), untagged.digest, "{dest}");
    }
}

#[test]
fn skopeo_sync_takes_the_whole_export_nested_names_included() {
    let fx = standard_tree(12);
    let out = out_beside(&fx, "out");
    let run = export(fx.root(), &out, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let registry = Registry::start().expect("docker-registry starts");
    let dest = format!("{}/mirror", registry.host());
    skopeo(&[
        "sync",
        "--all",
        "--scoped",
        "--preserve-digests",
        "--src",
        "dir",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        out.to_str().unwrap(),
        &dest,
    ]);
    for (reference, image) in &fx.truth.tags {
        let pulled = skopeo_raw(&format!("docker://{dest}/{reference}"));
        assert_eq!(sha256(&pulled), image.digest, "{reference}");
    }
}

#[test]
fn auto_link_shares_the_source_inode_for_blobs_and_manifests() {
    let fx = standard_tree(13);
    let out = out_beside(&fx, "out");
    let run = export(fx.root(), &out, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut files = 0;
    for (reference, image) in &fx.truth.tags {
        let folder = out.join(reference);
        let mut pairs = vec![(folder.join("manifest.json"), image.digest.clone())];
        for child in &image.children {
            pairs.push((
                folder.join(format!("{}.manifest.json", hex(child))),
                child.clone(),
            ));
        }
        for b in &image.blobs {
            pairs.push((folder.join(hex(&b.digest)), b.digest.clone()));
        }
        for (file, digest) in pairs {
            assert_eq!(
                ino(&file),
                ino(&tree::blob_data(fx.root(), &digest)),
                "{} is not a hard link to the source blob",
                file.display()
            );
            files += 1;
        }
    }
    let summary = summary_line(&run.stderr);
    assert!(
        summary.contains(&format!(
            "files: {files} hard-linked, 0 reflinked, 0 copied, 0 already right; 0 B written"
        )),
        "{summary}"
    );
}

#[test]
fn copy_mode_hashes_every_blob_and_rejects_a_corrupt_one() {
    let fx = standard_tree(14);
    let (digest, user) = blob_of_one_tag(&fx, &[]);
    let data = tree::blob_data(fx.root(), &digest);
    let mut bytes = fs::read(&data).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&data, &bytes).unwrap();

    let out = out_beside(&fx, "copied");
    let run = export(fx.root(), &out, &["--link", "copy"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.failed, [user.clone()].into());
    assert!(
        run.stderr.contains(&format!(
            "blob {digest} is corrupt: {} ({} bytes) hashes to {}",
            data.display(),
            bytes.len(),
            sha256(&bytes)
        )),
        "{}",
        run.stderr
    );
    let folder = out.join(&user);
    let left = names_in(&folder);
    assert!(!left.contains(hex(&digest)), "{left:?}");
    assert!(!left.contains("manifest.json"), "{left:?}");
    assert!(
        left.iter().all(|n| !n.starts_with(".ferry-tmp-")),
        "{left:?}"
    );
    for (reference, image) in fx.truth.tags.iter().filter(|(r, _)| **r != user) {
        for b in &image.blobs {
            let file = out.join(reference).join(hex(&b.digest));
            assert_ne!(ino(&file), ino(&tree::blob_data(fx.root(), &b.digest)));
            assert_eq!(sha256(&fs::read(&file).unwrap()), b.digest);
        }
    }
    assert!(summary_line(&run.stderr).contains("0 hard-linked"));

    // A hard link passes corruption on unnoticed; --verify hashes first and catches it.
    let linked = export(fx.root(), &out_beside(&fx, "linked"), &[]);
    assert_eq!(linked.code, 0, "{}", linked.stderr);
    let verified = export(fx.root(), &out_beside(&fx, "verified"), &["--verify"]);
    assert_eq!(verified.code, 1, "{}", verified.stderr);
    assert_eq!(verified.failed, [user].into());
    assert!(verified.stderr.contains(&data.display().to_string()));
}

#[test]
fn a_broken_image_fails_alone_named_with_its_file() {
    let fx = standard_tree(15);
    let truth = &fx.truth;
    // A missing layer.
    let (missing, missing_user) = blob_of_one_tag(&fx, &["charts/mychart:0.1.0", "ns/sub:v1"]);
    let missing_path = tree::blob_data(fx.root(), &missing);
    fs::remove_file(&missing_path).unwrap();
    // A damaged tag link.
    let bad_link = tree::tag_current_link(fx.root(), "charts/mychart", "0.1.0");
    fs::write(&bad_link, "sha256:not-a-digest").unwrap();
    // A tag pointing at a blob that is not a manifest at all.
    let layer = &truth.tags["ns/sub:1.0"].blobs.last().unwrap().digest;
    let unparseable = tree::tag_current_link(fx.root(), "ns/sub", "v1");
    fs::write(&unparseable, layer).unwrap();
    let before = snapshot(fx.root());

    let out = out_beside(&fx, "out");
    let run = export(fx.root(), &out, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let broken: BTreeSet<String> = [
        missing_user.clone(),
        "charts/mychart:0.1.0".to_string(),
        "ns/sub:v1".to_string(),
    ]
    .into();
    assert_eq!(run.failed, broken);
    for named in [&missing_path, &bad_link, &tree::blob_data(fx.root(), layer)] {
        assert!(
            run.stderr.contains(&named.display().to_string()),
            "no mention of {} in:\n{}",
            named.display(),
            run.stderr
        );
    }
    for (reference, image) in &truth.tags {
        let manifest = out.join(reference).join("manifest.json");
        if broken.contains(reference) {
            assert!(!manifest.exists(), "{reference}");
        } else {
            let raw = skopeo_raw(&format!("dir:{}", out.join(reference).display()));
            assert_eq!(sha256(&raw), image.digest, "{reference}");
        }
    }
    assert_eq!(snapshot(fx.root()), before, "the source changed");
}

/// Follows every descriptor from `index.json` and checks each blob file: present, right size, right hash.
fn check_oci_blobs(layout: &Path, entries: &[Value]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<Value> = entries.to_vec();
    while let Some(desc) = stack.pop() {
        let digest = desc["digest"].as_str().unwrap().to_string();
        if !seen.insert(hex(&digest).to_string()) {
            continue;
        }
        let file = layout.join("blobs/sha256").join(hex(&digest));
        if desc.get("urls").is_some() && !file.exists() {
            seen.remove(hex(&digest));
            continue;
        }
        let bytes = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(sha256(&bytes), digest, "{}", file.display());
        assert_eq!(bytes.len() as u64, desc["size"].as_u64().unwrap());
        let media_type = desc["mediaType"].as_str().unwrap_or_default();
        if media_type.contains("manifest") || media_type.contains("index") {
            let m: Value = serde_json::from_slice(&bytes).unwrap();
            for key in ["manifests", "layers"] {
                if let Some(list) = m[key].as_array() {
                    stack.extend(list.iter().cloned());
                }
            }
            if m.get("config").is_some() {
                stack.push(m["config"].clone());
            }
        }
    }
    seen
}

#[test]
fn oci_layout_passes_a_structural_check_with_digests_kept() {
    let fx = standard_tree(16);
    let truth = &fx.truth;
    let before = snapshot(fx.root());
    let out = out_beside(&fx, "oci");
    let run = export(fx.root(), &out, &["--layout", "oci", "--untagged"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(snapshot(fx.root()), before, "the source changed");

    let mut repos: BTreeSet<&str> = truth.tags.values().map(|t| t.repository.as_str()).collect();
    repos.extend(truth.untagged.iter().map(|u| u.repository.as_str()));
    for repo in repos {
        let layout = out.join(repo);
        let marker: Value = serde_json::from_slice(&fs::read(layout.join("oci-layout")).unwrap())
            .expect("oci-layout is JSON");
        assert_eq!(marker, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
        let index: Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        let entries = index["manifests"].as_array().unwrap();
        let mut tagged = BTreeMap::new();
        let mut untagged = BTreeSet::new();
        for e in entries {
            let digest = e["digest"].as_str().unwrap().to_string();
            match e["annotations"]["org.opencontainers.image.ref.name"].as_str() {
                Some(tag) => {
                    tagged.insert(
                        tag.to_string(),
                        (digest, e["mediaType"].as_str().unwrap().to_string()),
                    );
                }
                None => {
                    untagged.insert(digest);
                }
            }
        }
        let want_tagged: BTreeMap<String, (String, String)> = truth
            .tags
            .values()
            .filter(|t| t.repository == repo)
            .map(|t| (t.tag.clone(), (t.digest.clone(), t.media_type.clone())))
            .collect();
        assert_eq!(tagged, want_tagged, "{repo}");
        let want_untagged: BTreeSet<String> = truth
            .untagged
            .iter()
            .filter(|u| u.repository == repo)
            .map(|u| u.digest.clone())
            .collect();
        assert_eq!(untagged, want_untagged, "{repo}");
        let reachable = check_oci_blobs(&layout, entries);
        assert_eq!(
            names_in(&layout.join("blobs/sha256")),
            reachable,
            "{repo}: blobs/sha256 holds exactly what index.json reaches"
        );
        // skopeo 1.9.3 reads OCI-typed entries only (Docker types in a layout came with containers/image 5.35).
        for (tag, (digest, media_type)) in &tagged {
            if media_type.starts_with("application/vnd.oci.") {
                let raw = skopeo_raw(&format!("oci:{}:{tag}", layout.display()));
                assert_eq!(&sha256(&raw), digest, "{repo}:{tag}");
            }
        }
    }
}

#[test]
fn hostile_names_cannot_escape_the_output_folder() {
    let fx = standard_tree(17);
    let root = fx.root();
    let link = fs::read(tree::tag_current_link(root, "alpine", "3.19")).unwrap();
    let plant = |path: PathBuf| {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, &link).unwrap();
    };
    let repositories = tree::v2_dir(root).join("repositories");
    plant(repositories.join("..evil/_manifests/tags/x/current/link"));
    plant(repositories.join("org/..up/_manifests/tags/y/current/link"));
    plant(repositories.join("alpine/_manifests/tags/..z/current/link"));
    let elsewhere = tempfile::tempdir().unwrap();
    plant(elsewhere.path().join("_manifests/tags/sneaky/current/link"));
    std::os::unix::fs::symlink(elsewhere.path(), repositories.join("linked")).unwrap();
    std::os::unix::fs::symlink(
        elsewhere.path().join("_manifests/tags/sneaky"),
        repositories.join("alpine/_manifests/tags/linked"),
    )
    .unwrap();
    let elsewhere_before = snapshot(elsewhere.path());

    let parent = tempfile::tempdir_in(root.parent().unwrap()).unwrap();
    let out = parent.path().join("out");
    let run = export(root, &out, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    // A tag folder that is a link is reported as a broken tag (never followed). Invalid names
    // are quoted in the failed list, so that `--images` reads them back.
    let hostile: BTreeSet<String> = [
        r#""..evil:x""#,
        r#""org/..up:y""#,
        r#""alpine:..z""#,
        "alpine:linked",
    ]
    .map(String::from)
    .into();
    assert_eq!(run.failed, hostile, "{}", run.stderr);
    assert_eq!(names_in(parent.path()), ["out".to_string()].into());
    let out_real = fs::canonicalize(&out).unwrap();
    for entry in walkdir::WalkDir::new(&out) {
        let entry = entry.unwrap();
        assert!(!entry.path_is_symlink(), "{}", entry.path().display());
        assert!(
            fs::canonicalize(entry.path())
                .unwrap()
                .starts_with(&out_real)
        );
        let name = entry.file_name().to_string_lossy();
        assert!(
            !name.starts_with(".."),
            "{} was written",
            entry.path().display()
        );
    }
    let mut exported: BTreeSet<String> = fx.truth.tags.keys().cloned().collect();
    assert_eq!(image_folders(&out), exported);
    assert_eq!(snapshot(elsewhere.path()), elsewhere_before);

    // A link planted inside an earlier export is refused before anything is written through it.
    let target = tempfile::tempdir().unwrap();
    fs::remove_dir_all(out.join("org")).unwrap();
    std::os::unix::fs::symlink(target.path(), out.join("org")).unwrap();
    let rerun = export(root, &out, &[]);
    assert_eq!(rerun.code, 2, "{}", rerun.stderr);
    assert!(rerun.stderr.contains("symbolic link"), "{}", rerun.stderr);
    assert!(names_in(target.path()).is_empty());
    exported.retain(|r| !r.starts_with("org/"));
    assert_eq!(image_folders(&out), exported);
}

/// A folder on another filesystem than `path`, when this machine has one.
fn other_filesystem(path: &Path) -> Option<tempfile::TempDir> {
    let dev = fs::metadata(path).unwrap().dev();
    [
        Path::new("/dev/shm"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    ]
    .into_iter()
    .filter(|p| p.is_dir() && fs::metadata(p).unwrap().dev() != dev)
    .find_map(|p| tempfile::tempdir_in(p).ok())
}

#[test]
fn hard_links_across_filesystems_fail_clearly_and_auto_copies_instead() {
    let fx = standard_tree(18);
    let Some(other) = other_filesystem(fx.root()) else {
        panic!(
            "this test needs /dev/shm or the target dir on another filesystem than {}",
            fx.root().display()
        );
    };
    let out = other.path().join("out");
    let run = export(fx.root(), &out, &["--link", "hard"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("different filesystems"),
        "{}",
        run.stderr
    );
    assert!(!out.exists());

    let report = other.path().join("report.json");
    let run = export(fx.root(), &out, &["--report", report.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut files = 0;
    let mut bytes = 0;
    for (reference, image) in &fx.truth.tags {
        let folder = out.join(reference);
        for b in &image.blobs {
            let file = folder.join(hex(&b.digest));
            assert_ne!(ino(&file).0, ino(&tree::blob_data(fx.root(), &b.digest)).0);
            assert_eq!(sha256(&fs::read(&file).unwrap()), b.digest);
            assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o644);
            files += 1;
            bytes += b.size;
        }
        let raw = skopeo_raw(&format!("dir:{}", folder.display()));
        assert_eq!(sha256(&raw), image.digest);
        bytes += raw.len() as u64;
        files += 1 + image.children.len();
        for child in &image.children {
            bytes += fs::metadata(tree::blob_data(fx.root(), child))
                .unwrap()
                .len();
        }
    }
    let summary = summary_line(&run.stderr);
    assert!(
        summary.contains(&format!(
            "files: 0 hard-linked, 0 reflinked, {files} copied, 0 already right"
        )),
        "{summary}"
    );
    let report: Value = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["files"]["bytes_copied"], bytes);
}

#[test]
fn a_second_run_skips_what_is_right_and_repairs_the_rest() {
    let fx = standard_tree(19);
    let truth = &fx.truth;
    let out = out_beside(&fx, "out");
    let first = export(fx.root(), &out, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let total = truth.tags.len();
    let third = export(fx.root(), &out, &[]);
    assert!(
        summary_line(&third.stderr).starts_with(&format!(
            "images: 0 exported, {total} already there, 0 failed"
        )),
        "{}",
        third.stderr
    );

    // Damage three images the ways an interrupted or meddled-with export would.
    let removed = out.join("alpine:3.19");
    let removed_blob = hex(&truth.tags["alpine:3.19"].blobs[0].digest).to_string();
    fs::remove_file(removed.join(&removed_blob)).unwrap();
    let replaced = out.join("ns/sub:1.0");
    let replaced_blob = hex(&truth.tags["ns/sub:1.0"].blobs[0].digest).to_string();
    fs::remove_file(replaced.join(&replaced_blob)).unwrap();
    fs::write(replaced.join(&replaced_blob), b"not the blob").unwrap();
    let unfinished = out.join("org/team/sub/app:1.0");
    fs::remove_file(unfinished.join("manifest.json")).unwrap();
    fs::write(unfinished.join(".ferry-tmp-interrupted"), b"half a blob").unwrap();

    let second = export(fx.root(), &out, &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        summary_line(&second.stderr).starts_with(&format!(
            "images: 3 exported, {} already there, 0 failed",
            total - 3
        )),
        "{}",
        second.stderr
    );
    for (folder, blob) in [(&removed, &removed_blob), (&replaced, &replaced_blob)] {
        let digest = format!("sha256:{blob}");
        assert_eq!(
            ino(&folder.join(blob)),
            ino(&tree::blob_data(fx.root(), &digest))
        );
    }
    assert!(!unfinished.join(".ferry-tmp-interrupted").exists());
    let raw = skopeo_raw(&format!("dir:{}", unfinished.display()));
    assert_eq!(sha256(&raw), truth.tags["org/team/sub/app:1.0"].digest);

    // Copies are trusted on their hash, not their size.
    let copies = out_beside(&fx, "copies");
    assert_eq!(export(fx.root(), &copies, &["--link", "copy"]).code, 0);
    let victim = copies.join("ns/sub:1.0").join(&replaced_blob);
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    fs::remove_file(&victim).unwrap();
    fs::write(&victim, &bytes).unwrap();
    let again = export(fx.root(), &copies, &["--link", "copy"]);
    assert!(
        summary_line(&again.stderr).starts_with(&format!(
            "images: 1 exported, {} already there, 0 failed",
            total - 1
        )),
        "{}",
        again.stderr
    );
    assert_eq!(
        sha256(&fs::read(&victim).unwrap()),
        format!("sha256:{replaced_blob}")
    );
}

#[test]
fn a_folder_that_is_not_a_layout_is_refused_and_left_alone() {
    let fx = standard_tree(20);
    let mine = tempfile::tempdir().unwrap();
    fs::write(mine.path().join("notes.txt"), b"mine").unwrap();
    let run = export(fx.root(), mine.path(), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("not empty") && run.stderr.contains("notes.txt"),
        "{}",
        run.stderr
    );
    assert_eq!(names_in(mine.path()), ["notes.txt".to_string()].into());

    let before = snapshot(fx.root());
    let inside = fx.root().join("docker/exported");
    let run = export(fx.root(), &inside, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("inside the source tree"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(fx.root()), before);

    let oci = out_beside(&fx, "oci");
    assert_eq!(export(fx.root(), &oci, &["--layout", "oci"]).code, 0);
    let run = export(fx.root(), &oci, &["--layout", "dir"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("dir layout"), "{}", run.stderr);
}

#[test]
fn an_oci_index_json_that_cannot_be_written_fails_the_images_it_lists() {
    let fx = standard_tree(19);
    let root = fx.root();
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let first = export(root, &out, &["--layout", "oci", "--repo", "alpine"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Hand-made damage: alpine's index.json replaced by a folder, so it cannot be rewritten.
    let index = out.join("alpine/index.json");
    fs::remove_file(&index).unwrap();
    fs::create_dir(&index).unwrap();
    fs::write(index.join("keep"), b"x").unwrap();
    let run = export(root, &out, &["--layout", "oci"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let alpine: BTreeSet<String> = fx
        .truth
        .tags
        .keys()
        .filter(|k| k.starts_with("alpine:"))
        .cloned()
        .collect();
    assert_eq!(run.failed, alpine, "{}", run.stderr);
    for reference in &alpine {
        let names_it = |l: &str| l.contains(reference.as_str()) && l.contains("index.json");
        assert!(
            run.stderr.lines().any(names_it),
            "{reference}: {}",
            run.stderr
        );
    }
    // Other repositories' layouts were written.
    assert!(out.join("ns/sub/index.json").is_file());
}
