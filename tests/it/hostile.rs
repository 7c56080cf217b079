//! Hostile storage trees, for every command and as plain and gzip tarballs: each damage fails its
//! own image with a message naming the file; never a panic, a hang, a read outside the tree, a
//! write outside `--out`, nor memory that grows with the damage (peak RSS measured per run).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::images::{Format, Pushed, push_image, push_index};
use ferry_testkit::{Platform, Pusher, Registry, StoppedTree, Truth, generate_standard, tree};
use serde_json::{Value, json};

use crate::util::{default_destination, ferry_process, sha256};

/// No command may take longer than this on a hostile tree (a FIFO read would block forever).
const HANG: Duration = Duration::from_secs(180);
/// Peak RSS allowed for one run over the hostile tree (a 2 GiB link file and a 200 MB manifest
/// are in it; reading either whole would pass this at once).
const MAX_RSS_KIB: u64 = 48 * 1024;

/// One kind of damage: the images it must fail and what their messages must name.
struct Case {
    what: &'static str,
    /// Failed-list lines of the images this damage breaks.
    references: Vec<String>,
    /// Text each of those images' problems must hold (the file named, the reason).
    needles: Vec<String>,
}

/// The finished tree: every case, the images that must stay whole, and damage that is no image.
struct Hostile {
    tree: StoppedTree,
    truth: Truth,
    cases: Vec<Case>,
    /// Messages about damage that belongs to no image (a non-UTF-8 repository folder, a link loop).
    tree_needles: Vec<String>,
}

/// A finished ferry run: exit code, output, peak RSS.
struct Measured {
    code: i32,
    stdout: String,
    stderr: String,
    max_rss_kib: u64,
}

/// Runs `cmd` to its end (killing it and failing the test past [`HANG`]) and reads its own peak
/// RSS from `wait4`.
fn measured(mut cmd: Command) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let pid = cmd.spawn().expect("ferry starts").id() as nix::libc::pid_t;
    let started = Instant::now();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid, and wait4 only writes into these two locals.
        let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
        let done = unsafe { nix::libc::wait4(pid, &mut status, nix::libc::WNOHANG, &mut usage) };
        if done == pid {
            break (status, usage);
        }
        assert!(done == 0, "wait4 failed");
        if started.elapsed() > HANG {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} hung for {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let code = if nix::libc::WIFEXITED(status) {
        nix::libc::WEXITSTATUS(status)
    } else {
        128 + nix::libc::WTERMSIG(status)
    };
    Measured {
        code,
        stdout: fs::read_to_string(out).unwrap(),
        stderr: fs::read_to_string(err).unwrap(),
        max_rss_kib: usage.ru_maxrss as u64,
    }
}

/// Checks what every run must: an exit code of 1 (never a panic's 101), bounded memory, no line
/// broken by a hostile name.
fn sane(what: &str, m: &Measured) {
    assert_eq!(m.code, 1, "{what}: exit {}:\n{}", m.code, m.stderr);
    assert!(!m.stderr.contains("panicked"), "{what}:\n{}", m.stderr);
    assert!(
        m.max_rss_kib < MAX_RSS_KIB,
        "{what}: peak RSS {} KiB",
        m.max_rss_kib
    );
    for text in [&m.stdout, &m.stderr] {
        assert!(
            text.lines().all(|l| !l.starts_with("INJECTED")),
            "{what}: a name broke a line:\n{text}"
        );
    }
    eprintln!("{what}: peak RSS {} KiB", m.max_rss_kib);
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Points `repo:tag` at `bytes`, stored as a manifest blob (hand-made damage: the registry would
/// refuse these bytes).
fn plant_manifest(root: &Path, repo: &str, tag: &str, bytes: &[u8]) -> PathBuf {
    let digest = sha256(bytes);
    let data = tree::blob_data(root, &digest);
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    fs::write(&data, bytes).unwrap();
    fs::write(tree::tag_current_link(root, repo, tag), &digest).unwrap();
    data
}

/// The manifest of `pushed` with its first layer's descriptor changed by `edit`.
fn edited(pushed: &Pushed, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&pushed.bytes).unwrap();
    edit(&mut value["layers"][0]);
    serde_json::to_vec(&value).unwrap()
}

/// A tree written by docker-registry (the standard scenario plus one small image per case, each
/// with blobs of its own), then damaged by hand, one case per image.
fn hostile_tree(seed: u64) -> Hostile {
    let reg = Registry::start().expect("docker-registry starts");
    let truth = generate_standard(&reg, seed).expect("standard scenario");
    let p = Pusher::new(&reg);
    let amd64 = Platform::new("linux", "amd64", None);
    let image = |repo: &str| -> Pushed {
        let layer = format!("{repo} layer {seed}").into_bytes();
        push_image(
            &p,
            repo,
            Some("v1"),
            Format::Oci,
            &amd64,
            &[&layer],
            &[("case", repo)],
            None,
        )
        .unwrap_or_else(|e| panic!("{repo}: {e:#}"))
    };
    let names = [
        "garbage",
        "climb",
        "sparse",
        "huge",
        "loop",
        "negative",
        "oversize",
        "short",
        "sha512",
        "fifo",
        "socket",
        "fifomanifest",
        "nonutf8",
        "newline",
        "dotdot",
        "nonutf8repo",
    ];
    let pushed: BTreeMap<&str, Pushed> = names
        .iter()
        .map(|n| (*n, image(&format!("hostile/{n}"))))
        .collect();
    // An index whose child is overwritten with the index itself, and indexes nested 6 deep.
    let child = image("hostile/selfref");
    let selfref = push_index(
        &p,
        "hostile/selfref",
        Some("v1"),
        Format::Oci,
        std::slice::from_ref(&child),
    )
    .expect("index pushes");
    let mut deep = image("hostile/deep");
    for level in 0..6 {
        let tag = if level == 5 { Some("v1") } else { None };
        deep = push_index(&p, "hostile/deep", tag, Format::Oci, &[deep])
            .unwrap_or_else(|e| panic!("index level {level}: {e:#}"));
    }
    let tree = reg.stop().expect("docker-registry stops");
    let root = tree.root().to_path_buf();
    let link = |repo: &str| tree::tag_current_link(&root, repo, "v1");
    let manifest_of = |name: &str| tree::blob_data(&root, &pushed[name].digest);
    let mut cases = Vec::new();
    let mut case = |what, reference: &str, needles: Vec<String>| {
        cases.push(Case {
            what,
            references: vec![reference.to_string()],
            needles,
        });
    };

    fs::write(link("hostile/garbage"), b"\x00\xffgarbage\n").unwrap();
    case(
        "a link file of garbage",
        "hostile/garbage:v1",
        vec![s(&link("hostile/garbage")), "damaged link".into()],
    );
    fs::write(
        link("hostile/climb"),
        b"sha256:../../../../../../etc/passwd",
    )
    .unwrap();
    case(
        "a link climbing out with ..",
        "hostile/climb:v1",
        vec![s(&link("hostile/climb")), "damaged link".into()],
    );
    fs::File::options()
        .write(true)
        .open(link("hostile/sparse"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    case(
        "a 2 GiB sparse link file",
        "hostile/sparse:v1",
        vec![
            s(&link("hostile/sparse")),
            "larger than the 256 bytes".into(),
        ],
    );
    let huge = manifest_of("huge");
    fs::File::options()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    case(
        "a 200 MB manifest",
        "hostile/huge:v1",
        vec![s(&huge), "larger than".into()],
    );
    let current = link("hostile/loop").parent().unwrap().to_path_buf();
    fs::remove_dir_all(&current).unwrap();
    symlink("current", &current).unwrap();
    case(
        "a tag folder that is a link to itself",
        "hostile/loop:v1",
        vec![s(&current), "symbolic link".into()],
    );
    let negative = plant_manifest(
        &root,
        "hostile/negative",
        "v1",
        &edited(&pushed["negative"], |l| l["size"] = json!(-1)),
    );
    case(
        "a negative layer size",
        "hostile/negative:v1",
        vec![s(&negative), "negative size -1".into()],
    );
    let layer = &pushed["oversize"].blobs.last().unwrap().digest;
    plant_manifest(
        &root,
        "hostile/oversize",
        "v1",
        &edited(&pushed["oversize"], |l| l["size"] = json!(1u64 << 62)),
    );
    case(
        "a huge layer size",
        "hostile/oversize:v1",
        vec![
            s(&tree::blob_data(&root, layer)),
            format!("where the manifest says {}", 1u64 << 62),
        ],
    );
    let short = plant_manifest(
        &root,
        "hostile/short",
        "v1",
        &edited(&pushed["short"], |l| l["digest"] = json!("sha256:abc")),
    );
    case(
        "a digest of the wrong length",
        "hostile/short:v1",
        vec![s(&short), "layers[0]".into()],
    );
    let sha512 = plant_manifest(
        &root,
        "hostile/sha512",
        "v1",
        &edited(&pushed["sha512"], |l| {
            l["digest"] = json!(format!("sha512:{}", "ab".repeat(64)))
        }),
    );
    case(
        "a digest of another algorithm",
        "hostile/sha512:v1",
        vec![s(&sha512), "unsupported digest algorithm".into()],
    );
    let child_data = tree::blob_data(&root, &child.digest);
    fs::remove_file(&child_data).unwrap();
    fs::copy(tree::blob_data(&root, &selfref.digest), &child_data).unwrap();
    case(
        "an index whose child is the index itself",
        "hostile/selfref:v1",
        vec![s(&child_data), "is corrupt".into()],
    );
    case(
        "indexes nested past the limit",
        "hostile/deep:v1",
        vec!["nest deeper than 4 levels".into()],
    );
    fs::remove_file(link("hostile/fifo")).unwrap();
    nix::unistd::mkfifo(&link("hostile/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    case(
        "a FIFO as a link file",
        "hostile/fifo:v1",
        vec![s(&link("hostile/fifo")), "not a regular file".into()],
    );
    let config = tree::blob_data(&root, &pushed["socket"].blobs[0].digest);
    fs::remove_file(&config).unwrap();
    // A socket path must be short: bind one nearby, then move it into place.
    let short = tempfile::tempdir_in(root.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(short.path().join("s")).unwrap());
    fs::rename(short.path().join("s"), &config).unwrap();
    case(
        "a socket as a blob",
        "hostile/socket:v1",
        vec![s(&config), "not a regular file".into()],
    );
    let fifo_manifest = manifest_of("fifomanifest");
    fs::remove_file(&fifo_manifest).unwrap();
    nix::unistd::mkfifo(&fifo_manifest, nix::sys::stat::Mode::S_IRWXU).unwrap();
    case(
        "a FIFO as a manifest",
        "hostile/fifomanifest:v1",
        vec![s(&fifo_manifest), "not a regular file".into()],
    );
    let tags = tree::repo_dir(&root, "hostile/nonutf8").join("_manifests/tags");
    fs::rename(
        tags.join("v1"),
        tags.join(std::ffi::OsStr::from_bytes(b"v\xff1")),
    )
    .unwrap();
    case(
        "a tag folder whose name is not UTF-8",
        "\"hostile/nonutf8:v\u{FFFD}1\"",
        vec!["invalid tag name".into()],
    );
    let tags = tree::repo_dir(&root, "hostile/newline").join("_manifests/tags");
    fs::rename(tags.join("v1"), tags.join("v1\nINJECTED")).unwrap();
    case(
        "a tag folder named with a newline",
        r#""hostile/newline:v1\nINJECTED""#,
        vec!["invalid tag name".into()],
    );
    let repositories = tree::v2_dir(&root).join("repositories");
    fs::rename(
        tree::repo_dir(&root, "hostile/dotdot"),
        repositories.join("..evil"),
    )
    .unwrap();
    case(
        "a repository named ..evil",
        "\"..evil:v1\"",
        vec!["invalid repository name".into()],
    );
    // Damage that is no image: a repository folder that is not UTF-8, a repository link loop.
    let nonutf8 = repositories
        .join("hostile")
        .join(std::ffi::OsStr::from_bytes(b"bad\xffrepo"));
    fs::rename(tree::repo_dir(&root, "hostile/nonutf8repo"), &nonutf8).unwrap();
    let looped = repositories.join("hostile/looprepo");
    symlink("looprepo", &looped).unwrap();
    let tree_needles = vec![
        "invalid repository name".to_string(),
        format!("{} is a symbolic link", looped.display()),
    ];
    Hostile {
        tree,
        truth,
        cases,
        tree_needles,
    }
}

impl Hostile {
    fn root(&self) -> &Path {
        self.tree.root()
    }

    fn broken(&self) -> BTreeSet<String> {
        self.cases
            .iter()
            .flat_map(|c| c.references.iter().cloned())
            .collect()
    }

    /// Every image that must come through whole: the standard scenario's tags.
    fn whole(&self) -> BTreeSet<String> {
        self.truth.tags.keys().cloned().collect()
    }
}

/// The failed-list line of a `list --format json` row (as ferry writes it for that image).
fn reference(row: &Value) -> String {
    ferry::filter::ImageRef::Tag {
        repository: row["repository"].as_str().unwrap().to_string(),
        tag: row["tag"].as_str().unwrap().to_string(),
    }
    .list_line()
}

fn ferry(args: &[&str], source: &Path) -> Command {
    let mut cmd = ferry_process();
    cmd.arg(args[0]).arg(source).args(&args[1..]);
    cmd
}

#[test]
fn every_command_fails_each_hostile_image_alone_naming_its_file() {
    let h = hostile_tree(61);
    let root = h.root();
    let work = tempfile::tempdir_in(root.parent().unwrap()).unwrap();
    let broken = h.broken();
    let whole = h.whole();

    // list: every case broken with its file named, everything else ok.
    let listed = measured(ferry(&["list", "--format", "json"], root));
    sane("list", &listed);
    let rows: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    let by_ref: BTreeMap<String, &Value> = rows.iter().map(|r| (reference(r), r)).collect();
    assert_cases_broken("list", &h.cases, &by_ref);
    for r in &whole {
        assert_eq!(by_ref[r]["status"], "ok", "{r}: {}", by_ref[r]["problems"]);
    }
    assert_eq!(
        by_ref.keys().cloned().collect::<BTreeSet<_>>(),
        whole.union(&broken).cloned().collect(),
    );
    for needle in &h.tree_needles {
        assert!(
            listed.stderr.contains(needle),
            "{needle}:\n{}",
            listed.stderr
        );
    }

    // export: the same images fail; nothing is written outside --out, nothing climbs out.
    let out = work.path().join("export/out");
    fs::create_dir_all(out.parent().unwrap()).unwrap();
    let failed = work.path().join("export-failed.txt");
    let exported = measured(ferry(
        &[
            "export",
            "--out",
            &s(&out),
            "-o",
            &s(&failed),
            "--link",
            "copy",
        ],
        root,
    ));
    sane("export", &exported);
    assert_eq!(failed_set(&failed), broken, "{}", exported.stderr);
    assert_eq!(
        fs::read_dir(out.parent().unwrap()).unwrap().count(),
        1,
        "only --out itself"
    );
    let out_real = fs::canonicalize(&out).unwrap();
    let mut folders = BTreeSet::new();
    for entry in walkdir::WalkDir::new(&out) {
        let entry = entry.unwrap();
        assert!(!entry.path_is_symlink(), "{}", entry.path().display());
        assert!(
            fs::canonicalize(entry.path())
                .unwrap()
                .starts_with(&out_real)
        );
        assert!(!entry.file_name().as_bytes().starts_with(b".."));
        if entry.file_name() == "version" {
            let rel = entry.path().parent().unwrap().strip_prefix(&out).unwrap();
            folders.insert(rel.display().to_string());
        }
    }
    assert_eq!(folders, whole, "one folder per whole image");

    // push: the same images fail; every whole one arrives with its digest, no hostile tag does.
    let reg = Registry::start().unwrap();
    let failed = work.path().join("push-failed.txt");
    let pushed = measured(ferry(
        &["push", "-d", &reg.url(), "-o", &s(&failed), "-j", "4"],
        root,
    ));
    sane("push", &pushed);
    assert_eq!(failed_set(&failed), broken, "{}", pushed.stderr);
    let pusher = Pusher::new(&reg);
    for (r, tag) in &h.truth.tags {
        let got = pusher
            .get_manifest(&default_destination(&tag.repository), &tag.tag)
            .unwrap_or_else(|e| panic!("{r}: {e:#}"));
        assert_eq!(got.digest, tag.digest, "{r}");
    }
    for name in ["garbage", "negative", "selfref", "deep", "fifo", "socket"] {
        assert!(
            pusher
                .get_manifest(&format!("hostile/{name}"), "v1")
                .is_err(),
            "hostile/{name}:v1 was pushed"
        );
    }

    // validate against what was pushed: the whole images pass; the hostile ones are source
    // problems (named on stderr, not in the failed list: pushing again cannot repair them).
    let failed = work.path().join("validate-failed.txt");
    let validated = measured(ferry(
        &[
            "validate",
            "-d",
            &reg.url(),
            "-o",
            &s(&failed),
            "--format",
            "json",
        ],
        root,
    ));
    sane("validate", &validated);
    assert_eq!(failed_set(&failed), BTreeSet::new(), "{}", validated.stderr);
    let verdicts: Vec<Value> = serde_json::from_str(&validated.stdout).unwrap();
    let status: BTreeMap<String, String> = verdicts
        .iter()
        .map(|v| {
            (
                v["source"].as_str().unwrap().to_string(),
                v["status"].to_string(),
            )
        })
        .collect();
    for r in &whole {
        assert_eq!(status[r], "\"pass\"", "{r}");
    }
    for r in &broken {
        assert_eq!(status[r], "\"source-problem\"", "{r}");
        assert!(
            validated.stderr.contains(r.trim_matches('"')) || validated.stderr.contains(r),
            "{r}"
        );
    }

    // verify: the same images broken, each problem naming its file; the whole ones ok.
    let failed = work.path().join("verify-failed.txt");
    let verified = measured(ferry(
        &["verify", "-o", &s(&failed), "--format", "json"],
        root,
    ));
    sane("verify", &verified);
    assert_eq!(failed_set(&failed), broken, "{}", verified.stderr);
    let doc: Value = serde_json::from_str(&verified.stdout).unwrap();
    let by_ref: BTreeMap<String, &Value> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (reference(r), r))
        .collect();
    for r in &whole {
        assert_eq!(by_ref[r]["status"], "ok", "{r}: {}", by_ref[r]["problems"]);
    }
    assert_cases_broken("verify", &h.cases, &by_ref);
}

/// Every image of every case is in `by_ref` (rows of `list` or `verify`, by failed-list line) as
/// broken, its problems holding each of the case's needles.
fn assert_cases_broken(what: &str, cases: &[Case], by_ref: &BTreeMap<String, &Value>) {
    for case in cases {
        for r in &case.references {
            let row = by_ref.get(r).unwrap_or_else(|| {
                panic!("{what}: {}: {r} not listed: {:?}", case.what, by_ref.keys())
            });
            assert_eq!(row["status"], "broken", "{what}: {}: {r}", case.what);
            let problems = row["problems"].to_string();
            for needle in &case.needles {
                let needle = serde_json::to_string(needle).unwrap();
                let needle = needle.trim_matches('"');
                assert!(
                    problems.contains(needle),
                    "{what}: {}: {r}: {problems} lacks {needle}",
                    case.what
                );
            }
        }
    }
}

/// The lines of a failed list.
fn failed_set(path: &Path) -> BTreeSet<String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_hostile_tree_in_a_tar_or_tar_gz_fails_its_images_and_writes_only_its_cache() {
    let h = hostile_tree(62);
    let sandbox = tempfile::tempdir_in(h.root().parent().unwrap()).unwrap();
    let plain = sandbox.path().join("hostile.tar");
    // GNU tar skips the socket (with a warning), keeps links and FIFOs as such members, and
    // stores the sparse files as sparse members (which ferry refuses, naming them).
    let status = Command::new("tar")
        .args(["-cSf"])
        .arg(&plain)
        .arg("-C")
        .arg(h.root())
        .arg(".")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.code().is_some_and(|c| c <= 1), "tar: {status}");
    let gz = sandbox.path().join("hostile.tar.gz");
    let status = Command::new("gzip").arg("-k").arg(&plain).status().unwrap();
    assert!(status.success());
    let whole = h.whole();
    let broken = h.broken();
    let cache = sandbox.path().join("cache");
    // Failed lists of the verify runs, away from the archives' folder (checked below).
    let lists = tempfile::tempdir().unwrap();
    for archive in [&plain, &gz] {
        let name = archive.file_name().unwrap().to_string_lossy().into_owned();
        let listed = measured(ferry(&["list", "--format", "json"], archive));
        sane(&format!("list {name}"), &listed);
        let rows: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
        let by_ref: BTreeMap<String, &Value> = rows.iter().map(|r| (reference(r), r)).collect();
        for r in &whole {
            assert_eq!(
                by_ref[r]["status"], "ok",
                "{name}: {r}: {}",
                by_ref[r]["problems"]
            );
        }
        for (r, row) in &by_ref {
            assert!(
                whole.contains(r) || broken.contains(r) || row["status"] != "ok",
                "{name}: {r} listed as ok"
            );
        }
        for r in [
            "hostile/garbage:v1",
            "hostile/negative:v1",
            "hostile/deep:v1",
        ] {
            assert_eq!(by_ref[r]["status"], "broken", "{name}: {r}");
        }
        assert!(listed.stderr.contains("FIFO"), "{name}: {}", listed.stderr);
        assert!(
            listed.stderr.contains("GNU sparse"),
            "{name}: {}",
            listed.stderr
        );
        // verify hashes what the whole images need, from the tar in place or through the cache.
        let failed = lists.path().join(format!("verify-failed-{name}.txt"));
        let mut cmd = ferry(
            &[
                "verify",
                "--format",
                "json",
                "--cache-dir",
                &s(&cache),
                "-o",
                &s(&failed),
            ],
            archive,
        );
        cmd.env("HOME", sandbox.path().join("home"));
        let verified = measured(cmd);
        sane(&format!("verify {name}"), &verified);
        let doc: Value = serde_json::from_str(&verified.stdout).unwrap();
        let by_ref: BTreeMap<String, &Value> = doc["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (reference(r), r))
            .collect();
        for r in &whole {
            assert_eq!(by_ref[r]["status"], "ok", "verify {name}: {r}");
        }
        assert!(failed_set(&failed).is_disjoint(&whole), "verify {name}");
        for r in [
            "hostile/garbage:v1",
            "hostile/negative:v1",
            "hostile/deep:v1",
        ] {
            assert_eq!(by_ref[r]["status"], "broken", "verify {name}: {r}");
        }
    }
    // Push from the tar.gz: extracted into --cache-dir only; every whole image arrives.
    let reg = Registry::start().unwrap();
    let failed = sandbox.path().join("push-failed.txt");
    let mut cmd = ferry(
        &[
            "push",
            "-d",
            &reg.url(),
            "-o",
            &s(&failed),
            "--cache-dir",
            &s(&cache),
        ],
        &gz,
    );
    cmd.env("HOME", sandbox.path().join("home"));
    let pushed = measured(cmd);
    sane("push hostile.tar.gz", &pushed);
    let failed = failed_set(&failed);
    assert!(failed.is_disjoint(&whole), "{failed:?}");
    let pusher = Pusher::new(&reg);
    for (r, tag) in &h.truth.tags {
        let got = pusher
            .get_manifest(&default_destination(&tag.repository), &tag.tag)
            .unwrap_or_else(|e| panic!("{r}: {e:#}"));
        assert_eq!(got.digest, tag.digest, "{r}");
    }
    let mut names: BTreeSet<String> = fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.remove("push-failed.txt");
    assert_eq!(
        names,
        ["cache", "hostile.tar", "hostile.tar.gz"]
            .map(String::from)
            .into(),
        "nothing written beside the archives but the cache"
    );
    for entry in walkdir::WalkDir::new(&cache) {
        let entry = entry.unwrap();
        assert!(!entry.path_is_symlink(), "{}", entry.path().display());
        assert!(!entry.file_type().is_fifo(), "{}", entry.path().display());
    }
}

#[test]
fn a_fifo_given_as_source_is_refused_at_once() {
    // Regression: SOURCE was opened to tell its kind by content, and a FIFO blocks that forever.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("registry.tar");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let listed = measured(ferry(&["list"], &fifo));
    assert_eq!(listed.code, 2, "{}", listed.stderr);
    assert!(
        listed.stderr.contains("is not a registry storage tree"),
        "{}",
        listed.stderr
    );
}
