//! ferry SIGKILLed mid-push and mid-export, and a destination registry whose storage fills up:
//! nothing incomplete is left under a tag or a final name, and the re-run sends only what is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_testkit::{Proxy, Pusher, Registry, RequestRecord, Truth};

use crate::util::{
    SmallDisk, all_tags, assert_destination_whole, bulk_tree, default_destination,
    destination_tags, failed_lines, rerun_failed_push, sha256, skopeo_digest, spawn_ferry, tags_at,
    wait_at_most, wait_for, workdir,
};

/// A manifest PUT the registry took (201).
fn is_manifest_put(r: &RequestRecord) -> bool {
    r.method == "PUT" && r.path.contains("/manifests/") && r.status == 201
}

/// Digests of every blob the registry's storage holds (its `blobs/sha256/<2>/<hex>/data` files).
fn stored_blobs(storage_root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(storage_root.join("docker/registry/v2/blobs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_name() == "data" && e.file_type().is_file())
        .filter_map(|e| {
            let hex = e.path().parent()?.file_name()?.to_str()?.to_string();
            Some(format!("sha256:{hex}"))
        })
        .collect()
}

/// Where the kill lands: inside the image after the `fraction`-th manifest PUT, once one of its
/// blobs is uploaded, in a repository that has no tag yet or one that has some.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum InFlight {
    NewRepository,
    TaggedRepository,
}

/// Whether the log shows the kill point: `want` manifests PUT, then a completed blob upload of
/// the next image, in a repository as `in_flight` says. That upload's repository, then.
fn kill_point(log: &[RequestRecord], want: usize, in_flight: InFlight) -> Option<String> {
    let puts = log.iter().filter(|r| is_manifest_put(r)).count();
    if puts < want {
        return None;
    }
    let last_put = log.iter().rposition(is_manifest_put)?;
    let upload = log[last_put..]
        .iter()
        .rfind(|r| r.completed_upload().is_some())?;
    let repository = upload.repository()?;
    let tagged = log[..=last_put]
        .iter()
        .any(|r| is_manifest_put(r) && r.repository() == Some(repository));
    (tagged == (in_flight == InFlight::TaggedRepository)).then(|| repository.to_string())
}

/// Kills a `-j 1` push of a 160-image tree through the counting proxy in the middle of the image
/// after `fraction` of its manifests were PUT, checks the destination, then re-runs it and checks
/// what it sent.
fn push_killed_at(fraction: f64, in_flight: InFlight) {
    let (tree, truth) = bulk_tree(40, 4, 8 << 10);
    let total = truth.tags.len();
    assert_eq!(total, 160);
    let dest = Registry::start().expect("destination starts");
    let proxy = Proxy::start(&dest.url()).expect("proxy");
    let dir = workdir();
    let root = tree.root().to_str().unwrap().to_string();
    let url = proxy.url();
    // One worker: the re-run then meets the images in the killed run's order, so a blob the
    // killed run uploaded is found by the re-run's HEAD or mounted from where it already is.
    let args = ["push", &root, "-d", &url, "-o", "failed.txt", "-j", "1"];
    let want = (total as f64 * fraction).ceil() as usize;

    let killed_after = kill_when(
        dir.path(),
        &args,
        &format!("the push never got to {want} manifests"),
        || {
            proxy
                .inspect_requests(|log| kill_point(log, want, in_flight))
                .is_some()
        },
    );
    let killed_log = proxy.requests();
    let put = killed_log.iter().filter(|r| is_manifest_put(r)).count();
    let half_done = kill_point(&killed_log, want, in_flight).unwrap_or_else(|| {
        panic!("the image in flight finished before the kill landed: nothing was cut mid-image")
    });
    eprintln!(
        "push killed at {put}/{total} manifests PUT, {:.1} s in, inside an image of {half_done} ({in_flight:?})",
        killed_after.as_secs_f64()
    );
    assert!(
        put < total,
        "the kill landed after every manifest was PUT ({put}/{total}): nothing tested; use a slower setup"
    );

    // Right after the kill, straight at the registry: every listed tag is whole, with the source digest.
    let pusher = Pusher::new(&dest);
    let whole = assert_destination_whole(&pusher);
    let by_dest: BTreeMap<(String, String), &str> = truth
        .tags
        .values()
        .map(|t| {
            (
                (default_destination(&t.repository), t.tag.clone()),
                t.digest.as_str(),
            )
        })
        .collect();
    for (key, digest) in &whole {
        assert_eq!(
            by_dest.get(key).copied(),
            Some(digest.as_str()),
            "{key:?} at the destination"
        );
    }
    assert!(
        !whole.is_empty() && whole.len() < total,
        "{} tags at the destination",
        whole.len()
    );
    let stored = stored_blobs(dest.storage_root());
    let uploaded_killed: BTreeSet<String> = killed_log
        .iter()
        .filter_map(|r| r.completed_upload().map(str::to_string))
        .collect();
    assert!(
        uploaded_killed.is_subset(&stored),
        "a completed upload is not stored"
    );

    // The re-run: same command, no kill.
    proxy.clear_requests();
    let rerun = spawn_ferry(dir.path(), &args);
    let (code, stderr, took) = wait_at_most(rerun, Duration::from_secs(180));
    eprintln!("re-run: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tags_at(&pusher, &truth), all_tags(&truth));
    let after = assert_destination_whole(&pusher);
    assert_eq!(after.len(), total);
    let log = proxy.requests();

    // Only what was missing: no blob the destination already stored is uploaded again, none twice …
    let mut uploads: BTreeMap<String, usize> = BTreeMap::new();
    for d in log.iter().filter_map(RequestRecord::completed_upload) {
        *uploads.entry(d.to_string()).or_default() += 1;
    }
    let again: Vec<&String> = uploads.keys().filter(|d| stored.contains(*d)).collect();
    assert!(
        again.is_empty(),
        "uploaded again although the killed run left them at the destination: {again:?}"
    );
    assert!(uploads.values().all(|&n| n == 1), "{uploads:?}");
    // … every blob missing after the kill is uploaded (the tree's blobs all end up stored) …
    let needed: BTreeSet<String> = truth
        .tags
        .values()
        .flat_map(|t| t.blobs.iter().map(|b| b.digest.clone()))
        .collect();
    let missing: BTreeSet<String> = needed.difference(&stored).cloned().collect();
    assert_eq!(
        uploads.keys().cloned().collect::<BTreeSet<_>>(),
        missing,
        "uploads of the re-run"
    );
    // … and a tag already complete gets a HEAD (answered 200, the same digest) and no PUT.
    for (repo, tag) in whole.keys() {
        let path = format!("/v2/{repo}/manifests/{tag}");
        assert!(
            log.iter()
                .any(|r| r.method == "HEAD" && r.path == path && r.status == 200),
            "no HEAD of {repo}:{tag}"
        );
        assert!(
            !log.iter().any(|r| r.method == "PUT" && r.path == path),
            "{repo}:{tag} was complete and PUT again"
        );
    }
    let puts = log.iter().filter(|r| is_manifest_put(r)).count();
    assert_eq!(puts, total - whole.len(), "manifest PUTs of the re-run");
    assert!(
        stderr.contains(&format!("{} skipped", whole.len())),
        "{stderr}"
    );
    eprintln!(
        "re-run sent {} manifests, {} blob uploads ({} blobs were already stored), {} skipped",
        puts,
        uploads.len(),
        stored.len(),
        whole.len()
    );
}

#[test]
fn push_sigkilled_at_20_percent_leaves_only_whole_tags_and_the_rerun_sends_only_what_is_missing() {
    push_killed_at(0.2, InFlight::NewRepository);
}

#[test]
fn push_sigkilled_at_60_percent_leaves_only_whole_tags_and_the_rerun_sends_only_what_is_missing() {
    push_killed_at(0.6, InFlight::TaggedRepository);
}

/// Whether a file name is one ferry writes under a temporary name first.
fn is_temp(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".ferry-tmp-"))
}

/// Final-named files under `out` with their (inode, mtime in ns).
fn files_with_identity(out: &Path) -> BTreeMap<PathBuf, (u64, i64)> {
    walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && !is_temp(e.path()))
        .map(|e| {
            let m = e.metadata().expect("metadata");
            (
                e.path().to_path_buf(),
                (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
            )
        })
        .collect()
}

fn hash_file(path: &Path) -> String {
    sha256(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Every digest an image manifest names (config, layers), or an index its children.
fn references(manifest: &[u8]) -> (Vec<String>, Vec<String>) {
    let v: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
    let digests = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["digest"].as_str().map(str::to_string))
            .collect()
    };
    let mut blobs = digests("layers");
    blobs.extend(v["config"]["digest"].as_str().map(str::to_string));
    (blobs, digests("manifests"))
}

/// The `dir` layout after a kill: every file under a final name is whole (hashes to its name,
/// `manifest.json` to its tag's digest), and every folder holding `manifest.json` has every file
/// it names. Returns how many folders are complete.
fn assert_dir_layout_whole(out: &Path, truth: &Truth) -> usize {
    let mut complete = 0;
    for entry in walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if !entry.file_type().is_file() || is_temp(path) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name
            .strip_suffix(".manifest.json")
            .or((name.len() == 64).then_some(name.as_str()))
        {
            assert_eq!(
                hash_file(path),
                format!("sha256:{hex}"),
                "{}",
                path.display()
            );
        } else if name == "version" {
            assert_eq!(
                fs::read(path).unwrap(),
                b"Directory Transport Version: 1.1\n"
            );
        } else if name == "manifest.json" {
            let folder = path.parent().unwrap();
            let reference = folder
                .strip_prefix(out)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let tagged = truth
                .tags
                .get(&reference)
                .unwrap_or_else(|| panic!("{reference} is no tag of the tree"));
            let bytes = fs::read(path).unwrap();
            assert_eq!(sha256(&bytes), tagged.digest, "{}", path.display());
            let (blobs, children) = references(&bytes);
            let mut blobs = blobs;
            for child in children {
                let hex = child.trim_start_matches("sha256:");
                let child_path = folder.join(format!("{hex}.manifest.json"));
                let child_bytes = fs::read(&child_path)
                    .unwrap_or_else(|e| panic!("{}: {e}", child_path.display()));
                assert_eq!(sha256(&child_bytes), child);
                blobs.extend(references(&child_bytes).0);
            }
            for digest in blobs {
                let file = folder.join(digest.trim_start_matches("sha256:"));
                assert_eq!(hash_file(&file), digest, "{reference}: {}", file.display());
            }
            assert!(folder.join("version").is_file(), "{reference}: version");
            complete += 1;
        } else {
            panic!("unexpected file {}", path.display());
        }
    }
    complete
}

/// The `oci` layout after a kill: every blob file hashes to its name, and every tag an
/// `index.json` holds has its manifest and every blob it names.
fn assert_oci_layout_whole(out: &Path) {
    for entry in walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if !entry.file_type().is_file() || is_temp(path) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.parent().is_some_and(|p| p.ends_with("blobs/sha256")) {
            assert_eq!(
                hash_file(path),
                format!("sha256:{name}"),
                "{}",
                path.display()
            );
        } else if name == "index.json" {
            let index: serde_json::Value =
                serde_json::from_slice(&fs::read(path).unwrap()).expect("index.json");
            let layout = path.parent().unwrap();
            let blob = |d: &str| {
                layout
                    .join("blobs/sha256")
                    .join(d.trim_start_matches("sha256:"))
            };
            for m in index["manifests"].as_array().into_iter().flatten() {
                let digest = m["digest"].as_str().unwrap();
                let bytes = fs::read(blob(digest)).expect("manifest of an index.json entry");
                let (mut blobs, children) = references(&bytes);
                for child in children {
                    blobs.extend(references(&fs::read(blob(&child)).expect("child")).0);
                }
                for d in blobs {
                    assert!(blob(&d).is_file(), "{}: {d} missing", layout.display());
                }
            }
        } else {
            assert_eq!(name, "oci-layout", "unexpected file {}", path.display());
        }
    }
}

/// Final files an export of `truth` writes: per tag folder (dir) or per repository (oci).
fn expected_files(truth: &Truth, layout: &str) -> usize {
    if layout == "dir" {
        return truth.tags.values().map(|t| 1 + t.blobs.len()).sum();
    }
    let mut per_repo: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for t in truth.tags.values() {
        let set = per_repo.entry(&t.repository).or_default();
        set.insert(&t.digest);
        set.extend(t.blobs.iter().map(|b| b.digest.as_str()));
    }
    per_repo.values().map(BTreeSet::len).sum()
}

/// Blob and manifest files under final names so far (not `version`, `oci-layout`, `index.json`).
fn final_files(out: &Path) -> usize {
    walkdir::WalkDir::new(out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy();
            e.file_type().is_file() && (n.len() == 64 || n.ends_with("manifest.json"))
        })
        .count()
}

/// The data file of blob `hex` in a registry's storage.
fn blob_data(storage_root: &Path, hex: &str) -> PathBuf {
    storage_root
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Every empty file of a registry's storage but the empty blob's data (which is right empty):
/// what Distribution 2.8 leaves where a write in place hit ENOSPC.
fn empty_files(storage_root: &Path) -> BTreeSet<PathBuf> {
    const EMPTY_BLOB: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    walkdir::WalkDir::new(storage_root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.metadata().is_ok_and(|m| m.len() == 0))
        .map(|e| e.path().to_path_buf())
        .filter(|p| *p != blob_data(storage_root, EMPTY_BLOB))
        .collect()
}

/// Kills `ferry export --link copy -j 1` (one worker: a slower run, so the kill lands inside it) once `fraction` of its files are under their final names,
/// checks the layout, then re-runs it and checks that what was there was left alone.
fn export_killed_at(layout: &str, fraction: f64) {
    let (tree, truth) = bulk_tree(24, 5, 512 << 10);
    let dir = workdir();
    let out = dir.path().join("out");
    let root = tree.root().to_str().unwrap().to_string();
    let out_arg = out.to_str().unwrap().to_string();
    let args = [
        "export",
        &root,
        "--out",
        &out_arg,
        "--layout",
        layout,
        "--link",
        "copy",
        "-o",
        "failed.txt",
        "-j",
        "1",
    ];
    let total = expected_files(&truth, layout);
    let want = (total as f64 * fraction).ceil() as usize;

    let killed_after = kill_when(
        dir.path(),
        &args,
        &format!("the export never got to {want} files"),
        || final_files(&out) >= want,
    );
    let written = final_files(&out);
    eprintln!(
        "export --layout {layout} killed at {written}/{total} files, {:.1} s in",
        killed_after.as_secs_f64()
    );
    assert!(
        written < total,
        "the kill landed after every file was written ({written}/{total}): use a slower setup"
    );

    let complete = if layout == "dir" {
        assert_dir_layout_whole(&out, &truth)
    } else {
        assert_oci_layout_whole(&out);
        0
    };
    let before = files_with_identity(&out);
    let temps = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| is_temp(e.path()))
        .count();
    eprintln!(
        "after the kill: {complete} complete folders, {} final files, {temps} temporary files",
        before.len()
    );

    let rerun = spawn_ferry(dir.path(), &args);
    let (code, stderr, took) = wait_at_most(rerun, Duration::from_secs(180));
    eprintln!("re-run: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 0, "{stderr}");
    if layout == "dir" {
        assert!(
            stderr.contains(&format!("{complete} already there")),
            "the complete folders are skipped:\n{stderr}"
        );
    }
    // What was there is left alone: same inode, same mtime.
    let now = files_with_identity(&out);
    for (path, identity) in &before {
        assert_eq!(
            now.get(path),
            Some(identity),
            "{} was rewritten or removed by the re-run",
            path.display()
        );
    }
    assert_eq!(final_files(&out), total);
    // And the result reads as complete, through skopeo (the `dir:` transport, or the OCI entries).
    if layout == "dir" {
        assert_eq!(assert_dir_layout_whole(&out, &truth), truth.tags.len());
        for (name, t) in &truth.tags {
            let reference = format!("dir:{}", out.join(name).display());
            assert_eq!(skopeo_digest(&reference, &[]), t.digest, "{name}");
        }
    } else {
        assert_oci_layout_whole(&out);
        for (name, t) in &truth.tags {
            let layout_dir = out.join(&t.repository);
            let index: serde_json::Value =
                serde_json::from_slice(&fs::read(layout_dir.join("index.json")).unwrap()).unwrap();
            let entry = index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == t.tag.as_str())
                .unwrap_or_else(|| panic!("{name} not in index.json"));
            assert_eq!(entry["digest"], t.digest.as_str(), "{name}");
            if t.media_type == "application/vnd.oci.image.manifest.v1+json" {
                let reference = format!("oci:{}:{}", layout_dir.display(), t.tag);
                assert_eq!(skopeo_digest(&reference, &[]), t.digest, "{name}");
            }
        }
    }
    let left: Vec<PathBuf> = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| is_temp(e.path()))
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(left.is_empty(), "the re-run left temporary files: {left:?}");
}

#[test]
fn export_dir_sigkilled_at_20_percent_leaves_only_whole_files_and_the_rerun_keeps_them() {
    export_killed_at("dir", 0.2);
}

#[test]
fn export_dir_sigkilled_at_60_percent_leaves_only_whole_files_and_the_rerun_keeps_them() {
    export_killed_at("dir", 0.6);
}

#[test]
fn export_oci_sigkilled_at_20_percent_leaves_only_whole_files_and_the_rerun_keeps_them() {
    export_killed_at("oci", 0.2);
}

#[test]
fn export_oci_sigkilled_at_60_percent_leaves_only_whole_files_and_the_rerun_keeps_them() {
    export_killed_at("oci", 0.6);
}

#[test]
fn a_destination_whose_storage_fills_up_stops_the_push_once_and_the_rerun_from_the_failed_list_completes()
 {
    let (tree, truth) = bulk_tree(30, 4, 256 << 10);
    let dest = Registry::start().expect("destination starts");
    // The registry's storage folder on a 4 MiB tmpfs: the tree (about 9 MiB of blobs) does not fit.
    let Some(disk) = SmallDisk::mount_on(dest.storage_root(), 4 << 20) else {
        eprintln!("SKIPPED: cannot mount a small tmpfs here (needs root and mount rights)");
        return;
    };
    let dir = workdir();
    let root = tree.root().to_str().unwrap().to_string();
    let url = dest.url();
    let host = url.trim_start_matches("http://").to_string();
    let child = spawn_ferry(dir.path(), &["push", &root, "-d", &url, "-o", "failed.txt"]);
    let (code, stderr, took) = wait_at_most(child, Duration::from_secs(180));
    eprintln!(
        "full destination → exit {code} after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.matches("push stopped:").count(),
        1,
        "the cause is said once:\n{stderr}"
    );
    let cause = stderr
        .lines()
        .find(|l| l.contains("push stopped:"))
        .unwrap()
        .to_string();
    eprintln!("{cause}");
    for needle in ["storage full", "no space left on device", host.as_str()] {
        assert!(cause.contains(needle), "{needle:?} not in: {cause}");
    }
    // Not retried: at most a request of each other worker, sent before the stop, that met a
    // link Distribution had just left empty (answered 500 without a cause) says "retry".
    assert!(
        stderr.matches("retry 1/").count() <= 3,
        "a full disk is not retried:\n{stderr}"
    );

    // Nothing corrupt at the destination, and every image not there is in the failed list.
    let pusher = Pusher::new(&dest);
    let (whole, unserved) = destination_tags(&pusher);
    let at = tags_at(&pusher, &truth);
    assert_eq!(
        whole.len(),
        at.len(),
        "only tags of the tree, with their digests"
    );
    let failed: BTreeSet<String> = failed_lines(&dir.path().join("failed.txt"))
        .into_iter()
        .collect();
    // Distribution's own half-writes: a file it writes in place (a link, a manifest's data)
    // that hit ENOSPC is left empty (truncated, then nothing written), and a tag over one answers
    // 500; a tag folder whose `current/link` could not be made at all is listed and answers 404.
    // Such a tag can only be one ferry failed.
    let empty = empty_files(dest.storage_root());
    for (repository, tag, error) in &unserved {
        let repo = dest
            .storage_root()
            .join("docker/registry/v2/repositories")
            .join(repository);
        let link = repo.join("_manifests/tags").join(tag).join("current/link");
        let half_written = !link.exists() || empty.contains(&link) || {
            let digest = fs::read_to_string(&link).unwrap_or_default();
            let hex = digest.trim_start_matches("sha256:");
            hex.len() == 64
                && (empty.contains(
                    &repo
                        .join("_manifests/revisions/sha256")
                        .join(hex)
                        .join("link"),
                ) || empty.contains(&blob_data(dest.storage_root(), hex)))
        };
        assert!(
            half_written,
            "{repository}:{tag} is listed, not served ({error}), and no file of it is empty"
        );
        let source = truth
            .tags
            .values()
            .find(|t| default_destination(&t.repository) == *repository && t.tag == *tag)
            .expect("a tag of the tree");
        let name = format!("{}:{}", source.repository, source.tag);
        assert!(
            failed.contains(&name),
            "{name} is broken and not in the failed list"
        );
    }
    let kinds: Vec<String> = empty
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(dest.storage_root()).unwrap_or(p);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .filter(|c| {
                    c.starts_with('_')
                        || matches!(
                            c.as_str(),
                            "blobs" | "current" | "link" | "data" | "startedat"
                        )
                })
                .collect();
            parts.join("/")
        })
        .collect();
    eprintln!(
        "Distribution left {} empty files ({kinds:?}); {} listed tags are not served",
        empty.len(),
        unserved.len()
    );
    let missing: BTreeSet<String> = all_tags(&truth).difference(&at).cloned().collect();
    assert!(
        !at.is_empty() && !missing.is_empty(),
        "{} of {} tags pushed: the disk should fill part way",
        at.len(),
        truth.tags.len()
    );
    assert!(
        missing.is_subset(&failed),
        "not at the destination and not in the failed list: {:?}",
        missing.difference(&failed).collect::<Vec<_>>()
    );
    assert!(
        failed.difference(&missing).count() <= 4,
        "listed but present beyond the 4 in flight: {:?}",
        failed.difference(&missing).collect::<Vec<_>>()
    );
    eprintln!(
        "{} tags pushed before the disk was full, {} in the failed list",
        at.len(),
        failed.len()
    );

    // Room again, and the operator's repair of Distribution's half-writes (it takes an empty
    // file for a whole one: a manifest PUT again would not rewrite empty data): the re-run from
    // the failed list completes.
    disk.resize(256 << 20);
    for path in &empty {
        fs::remove_file(path).expect("remove an empty file");
    }
    let (code, stderr, took) = rerun_failed_push(dir.path(), &root, &url);
    eprintln!("re-run: {:.1} s", took.as_secs_f64());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tags_at(&pusher, &truth), all_tags(&truth));
    assert_eq!(assert_destination_whole(&pusher).len(), truth.tags.len());
    drop(disk);
}

/// Runs ferry with `args` in `dir` and SIGKILLs it as soon as `reached()` holds (polled, for at
/// most 120 s). Fails the test with `never` when it never held, or when ferry ended before the
/// kill. Returns how long ferry ran.
fn kill_when(
    dir: &Path,
    args: &[&str],
    never: &str,
    mut reached: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    let mut child = spawn_ferry(dir, args);
    let mut exited = None;
    let got_there = wait_for(Duration::from_secs(120), || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        reached()
    });
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let ran = started.elapsed();
    assert!(got_there, "{never}");
    assert!(exited.is_none(), "ferry ended before the kill: {exited:?}");
    ran
}
