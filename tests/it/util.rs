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
