//! Shared test helpers: the ferry command, fresh trees written by docker-registry, tree snapshots.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ferry_testkit::{Registry, StoppedTree, Truth, generate_standard};
use sha2::{Digest as _, Sha256};

/// The ferry binary under test, with a clean environment for credentials and proxies.
pub fn ferry() -> assert_cmd::Command {
    assert_cmd::Command::from_std(ferry_process())
}

/// [`ferry`] as a plain process, for runs started side by side.
pub fn ferry_process() -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("ferry"));
    for var in [
        "JOB_COMPLETION_INDEX",
        "FERRY_USERNAME",
        "FERRY_PASSWORD",
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
        "XDG_RUNTIME_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A storage tree written by a real docker-registry (standard scenario), and its truth.
pub struct Fixture {
    pub tree: StoppedTree,
    pub truth: Truth,
}

impl Fixture {
    /// The storage root (holds `docker/registry/v2`).
    pub fn root(&self) -> &Path {
        self.tree.root()
    }
}

/// Starts a registry, pushes the standard scenario, stops it.
pub fn standard_tree(seed: u64) -> Fixture {
    let registry = Registry::start().expect("docker-registry starts");
    let truth = generate_standard(&registry, seed).expect("standard scenario pushes");
    let tree = registry.stop().expect("docker-registry stops");
    Fixture { tree, truth }
}

/// Every file, folder and symlink under `root`: mode, size, content hash, symlink target.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, String>);

pub fn snapshot(root: &Path) -> Snapshot {
    let mut map = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.expect("walk");
        let meta = entry.path().symlink_metadata().expect("metadata");
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        let what = if meta.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(entry.path()).unwrap())
        } else if meta.is_file() {
            let bytes = fs::read(entry.path()).expect("read");
            format!(
                "file {} {}",
                meta.len(),
                hex::encode(Sha256::digest(&bytes))
            )
        } else {
            "dir".to_string()
        };
        map.insert(
            rel,
            format!(
                "{what} mode {:o} mtime {}",
                meta.mode(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000
            ),
        );
    }
    Snapshot(map)
}

/// The sha256 digest string of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The destination repository ferry uses by default for a source repository.
pub fn default_destination(repository: &str) -> String {
    if repository.contains('/') {
        repository.to_string()
    } else {
        format!("library/{repository}")
    }
}

/// `skopeo inspect --raw` of a reference (any transport); the raw manifest bytes.
pub fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", reference])
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo inspect --raw {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A folder to run a command in, so default output files (`push-failed.txt`) land in it.
pub fn workdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// `ferry push ROOT -d DEST -o DIR/failed.txt` run in `dir`, with extra arguments.
pub fn push_cmd(root: &Path, dest: &str, dir: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = ferry();
    cmd.current_dir(dir)
        .arg("push")
        .arg(root)
        .args(["-d", dest, "-o"])
        .arg(dir.join("failed.txt"))
        .args(extra);
    cmd
}

/// The outcome of a finished command as text.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// stdout and stderr together, for "appears nowhere" checks.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

pub fn run(cmd: &mut assert_cmd::Command) -> Ran {
    let out = cmd.output().expect("command runs");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Checks that every tag of `truth` is at the destination under `map(repo)` with its digest
/// (read back through `pusher`, with every manifest type accepted).
pub fn assert_tags_at(pusher: &ferry_testkit::Pusher, truth: &Truth, map: impl Fn(&str) -> String) {
    for (name, tag) in &truth.tags {
        let dest = map(&tag.repository);
        let got = pusher
            .get_manifest(&dest, &tag.tag)
            .unwrap_or_else(|e| panic!("{name} → {dest}:{}: {e:#}", tag.tag));
        assert_eq!(got.digest, tag.digest, "{name} → {dest}:{}", tag.tag);
        assert_eq!(sha256(&got.bytes), tag.digest, "{name}: bytes kept");
    }
}

/// sha256 of `skopeo inspect --raw` with extra skopeo flags (credentials, certificates).
pub fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(extra)
        .arg(reference)
        .output()
        .expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo inspect --raw {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sha256(&out.stdout)
}

/// `ferry validate ROOT -d DEST -o DIR/validate-failed.txt` run in `dir`, with extra arguments.
pub fn validate_cmd(root: &Path, dest: &str, dir: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = ferry();
    cmd.current_dir(dir)
        .arg("validate")
        .arg(root)
        .args(["-d", dest, "-o"])
        .arg(dir.join("validate-failed.txt"))
        .args(extra);
    cmd
}

/// The lines of a failed list, sorted.
pub fn failed_lines(path: &Path) -> Vec<String> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("failed list {}: {e}", path.display()));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// `broken` (source `repo:tag`s) with the cosign signatures of those images (tags
/// `sha256-<hex>.sig|.att|.sbom` of the same repository): a push fails a signature with its subject.
pub fn with_signatures(
    truth: &Truth,
    broken: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let mut out = broken.clone();
    for t in truth.tags.values() {
        let Some(hex) = t.tag.strip_prefix("sha256-") else {
            continue;
        };
        let hex = hex.split('.').next().unwrap_or_default();
        let subject_broken = truth.tags.values().any(|s| {
            s.repository == t.repository
                && s.digest == format!("sha256:{hex}")
                && broken.contains(&format!("{}:{}", s.repository, s.tag))
        });
        if subject_broken {
            out.insert(format!("{}:{}", t.repository, t.tag));
        }
    }
    out
}

/// A tree of `repositories` × `tags` small images written by docker-registry (the bulk scenario:
/// base layers of `layer_bytes` shared across repositories, one layer of a quarter of that per image).
pub fn bulk_tree(
    repositories: usize,
    tags: usize,
    layer_bytes: usize,
) -> (ferry_testkit::StoppedTree, Truth) {
    let reg = Registry::start().expect("docker-registry starts");
    let spec = ferry_testkit::BulkSpec {
        repositories,
        tags_per_repo: tags,
        base_layers: 6,
        base_layer_bytes: layer_bytes,
        unique_layer_bytes: layer_bytes / 4,
        ..ferry_testkit::BulkSpec::default()
    };
    let truth = ferry_testkit::generate_bulk(&reg, &spec).expect("bulk scenario pushes");
    (reg.stop().expect("registry stops"), truth)
}

/// The ferry binary as a child process (so a test can signal or kill it, or what it talks to).
pub fn spawn_ferry(dir: &Path, args: &[&str]) -> std::process::Child {
    ferry_process()
        .current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ferry starts")
}

/// Waits for the child at most `limit`; kills it and fails the test past that.
pub fn wait_at_most(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> (i32, String, std::time::Duration) {
    let started = std::time::Instant::now();
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
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `ferry push ROOT -d URL --images failed.txt -o failed2.txt` in `dir` (the re-run a failed list
/// is for), waited on for at most 180 s: exit code, stderr, time taken.
pub fn rerun_failed_push(dir: &Path, root: &str, url: &str) -> (i32, String, std::time::Duration) {
    let failed = dir.join("failed.txt");
    let rerun = spawn_ferry(
        dir,
        &[
            "push",
            root,
            "-d",
            url,
            "-o",
            "failed2.txt",
            "--images",
            failed.to_str().unwrap(),
        ],
    );
    wait_at_most(rerun, std::time::Duration::from_secs(180))
}

/// Waits until `ready()` or `limit` passes; false when it never became true.
pub fn wait_for(limit: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// A tmpfs of `bytes` mounted on `path` (an existing, empty folder); unmounted when dropped.
/// `None` where this machine does not let the test mount one (then the test says so and skips).
pub struct SmallDisk {
    pub path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SmallDisk {
    /// On a fresh folder of its own.
    pub fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        fs::create_dir(&path).ok()?;
        let mut disk = SmallDisk::mount_on(&path, bytes)?;
        disk._dir = Some(dir);
        Some(disk)
    }

    /// Over `path`, which must exist.
    pub fn mount_on(path: &Path, bytes: u64) -> Option<SmallDisk> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            path: path.to_path_buf(),
            _dir: None,
        })
    }

    /// Grows (or shrinks) the tmpfs in place, keeping its files.
    pub fn resize(&self, bytes: u64) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount of {}", self.path.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open there (a registry) does not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// `GET /v2/<repo>/tags/list` of a repository the catalog names: none when it has no tag
/// (Distribution answers 404 for a repository holding only blobs, as a killed push leaves).
fn tags_or_none(pusher: &ferry_testkit::Pusher, repository: &str) -> Vec<String> {
    match pusher.tags(repository) {
        Ok(tags) => tags,
        Err(e) if format!("{e:#}").contains("404") => Vec::new(),
        Err(e) => panic!("tags of {repository}: {e:#}"),
    }
}

/// Checks that every tag the registry behind `pusher` lists (`/v2/_catalog`, then each
/// repository's `tags/list`) points at a whole image: its manifest is served with its digest, and
/// every blob it references (config, layers; for an index, every child manifest and their blobs)
/// answers `HEAD` 200 in that repository. Returns every (repository, tag) with its digest.
pub fn assert_destination_whole(
    pusher: &ferry_testkit::Pusher,
) -> BTreeMap<(String, String), String> {
    let (whole, unserved) = destination_tags(pusher);
    assert!(
        unserved.is_empty(),
        "listed but their manifest is not served: {unserved:#?}"
    );
    whole
}

/// A listed tag whose manifest is not served: repository, tag, the error.
pub type Unserved = (String, String, String);

/// [`assert_destination_whole`] that hands back the listed tags whose manifest is not served
/// (with the error) instead of failing on them; every served tag is still checked whole.
pub fn destination_tags(
    pusher: &ferry_testkit::Pusher,
) -> (BTreeMap<(String, String), String>, Vec<Unserved>) {
    let mut found = BTreeMap::new();
    let mut unserved = Vec::new();
    for repository in pusher.catalog().expect("catalog") {
        for tag in tags_or_none(pusher, &repository) {
            let name = format!("{repository}:{tag}");
            let m = match pusher.get_manifest(&repository, &tag) {
                Ok(m) => m,
                Err(e) => {
                    unserved.push((repository.clone(), tag, format!("{e:#}")));
                    continue;
                }
            };
            assert_eq!(sha256(&m.bytes), m.digest, "{name}: digest of the bytes");
            assert_manifest_whole(pusher, &repository, &m.bytes, &name, 0);
            found.insert((repository.clone(), tag), m.digest);
        }
    }
    (found, unserved)
}

fn assert_manifest_whole(
    pusher: &ferry_testkit::Pusher,
    repository: &str,
    bytes: &[u8],
    name: &str,
    depth: usize,
) {
    assert!(depth < 5, "{name}: indexes nested too deep");
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{name}: manifest is not JSON: {e}"));
    if let Some(children) = v["manifests"].as_array() {
        for child in children {
            let digest = child["digest"].as_str().expect("child digest");
            let m = pusher
                .get_manifest(repository, digest)
                .unwrap_or_else(|e| panic!("{name}: child {digest} missing: {e:#}"));
            assert_eq!(sha256(&m.bytes), digest, "{name}: child {digest}");
            assert_manifest_whole(pusher, repository, &m.bytes, name, depth + 1);
        }
        return;
    }
    let mut blobs: Vec<&serde_json::Value> = v["layers"].as_array().into_iter().flatten().collect();
    blobs.extend(v.get("config"));
    for blob in blobs {
        if blob.get("urls").is_some() {
            continue; // a foreign layer lives elsewhere
        }
        let digest = blob["digest"].as_str().expect("blob digest");
        assert!(
            pusher.blob_exists(repository, digest).expect("HEAD blob"),
            "{name}: blob {digest} does not answer HEAD 200 in {repository}"
        );
    }
}

/// Source `repo:tag` of every tag the destination serves with the source digest.
pub fn tags_at(
    pusher: &ferry_testkit::Pusher,
    truth: &Truth,
) -> std::collections::BTreeSet<String> {
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

pub fn all_tags(truth: &Truth) -> std::collections::BTreeSet<String> {
    truth
        .tags
        .values()
        .map(|t| format!("{}:{}", t.repository, t.tag))
        .collect()
}
