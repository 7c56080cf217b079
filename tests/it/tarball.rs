//! Registry tarballs as sources: every archive form lists like its folder, a plain tar pushes in place, a compressed one through its cache, damage and hostile members are named.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_testkit::{Pusher, Registry, tree};
use serde_json::Value;

use crate::util::*;

/// Runs the system `tar` with `args`.
fn tar(args: &[&str]) {
    let out = Command::new("tar").args(args).output().expect("tar runs");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ferry` with HOME and XDG_CACHE_HOME inside `home`, so a default cache folder would land there.
fn ferry_at(home: &Path) -> assert_cmd::Command {
    let mut cmd = ferry();
    cmd.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .current_dir(home);
    cmd
}

/// `ferry list SOURCE --format json` with extra arguments: exit code, rows, stderr.
fn list(home: &Path, source: &Path, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let ran = run(ferry_at(home)
        .arg("list")
        .arg(source)
        .args(["--format", "json"])
        .args(extra));
    let rows = serde_json::from_str::<Value>(&ran.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    (ran.code, rows, ran.stderr)
}

/// Names of every file and folder under `dir`, relative to it.
fn names_under(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect()
}

/// A plain tar of the tree with its repositories before its blobs, sorted (so a cut in the
/// blobs leaves every tag and some whole images).
fn repositories_first(root: &Path, out: &Path) {
    tar(&[
        "--sort=name",
        "-cf",
        s(out),
        "-C",
        s(root),
        "docker/registry/v2/repositories",
        "docker/registry/v2/blobs",
    ]);
}

fn rows_by_reference(rows: &[Value]) -> std::collections::BTreeMap<String, &Value> {
    rows.iter()
        .map(|r| {
            (
                format!(
                    "{}:{}",
                    r["repository"].as_str().unwrap(),
                    r["tag"].as_str().unwrap_or("-")
                ),
                r,
            )
        })
        .collect()
}

#[test]
fn every_archive_form_lists_like_the_folder_and_writes_nothing() {
    let fx = standard_tree(31);
    let root = fx.root();
    let home = tempfile::tempdir().unwrap();
    let archives = tempfile::tempdir().unwrap();
    let (code, folder_rows, folder_err) = list(home.path(), root, &["--untagged"]);
    assert_eq!(code, 0, "{folder_err}");
    let parent = root.parent().unwrap();
    let name = root.file_name().unwrap().to_str().unwrap();
    let v2_parent = tree::v2_dir(root).parent().unwrap().to_path_buf();
    let a = |n: &str| archives.path().join(n);
    // Plain with a leading folder, plain from inside ("./docker/..."), gzip of docker/, zstd of
    // the v2 folder itself, xz with three leading folders; file names say nothing.
    tar(&["-cf", s(&a("one")), "-C", s(parent), name]);
    tar(&["-cf", s(&a("two")), "-C", s(root), "."]);
    tar(&["-czf", s(&a("three")), "-C", s(root), "docker"]);
    tar(&["--zstd", "-cf", s(&a("four")), "-C", s(&v2_parent), "v2"]);
    tar(&[
        "-cJf",
        s(&a("five")),
        "--transform",
        "s,^,var/lib/registry/,",
        "-C",
        s(root),
        ".",
    ]);
    let before = names_under(archives.path());
    for form in ["one", "two", "three", "four", "five"] {
        let (code, rows, stderr) = list(home.path(), &a(form), &["--untagged"]);
        assert_eq!(code, 0, "{form}: {stderr}");
        assert_eq!(
            rows, folder_rows,
            "{form}: the archive lists like the folder"
        );
        assert!(
            stderr.contains(&format!("{} tags", fx.truth.tags.len())),
            "{form}: {stderr}"
        );
    }
    assert_eq!(
        names_under(archives.path()),
        before,
        "nothing beside the archives"
    );
    assert!(
        names_under(home.path()).is_empty(),
        "list wrote into the home folder: {:?}",
        names_under(home.path())
    );
}

#[test]
fn a_plain_tar_pushes_in_place_and_a_tar_gz_validates_without_a_cache() {
    let fx = standard_tree(32);
    let home = tempfile::tempdir().unwrap();
    let archives = tempfile::tempdir().unwrap();
    let plain = archives.path().join("registry.tar");
    let gz = archives.path().join("registry.tar.gz");
    let root = fx.root();
    tar(&[
        "-cf",
        s(&plain),
        "--transform",
        "s,^\\.,srv/registry,",
        "-C",
        s(root),
        ".",
    ]);
    tar(&["-czf", s(&gz), "-C", s(root), "docker"]);
    // Reached through a symbolic link, as archives on a mounted disk often are.
    let link = archives.path().join("link.tar");
    std::os::unix::fs::symlink(&plain, &link).unwrap();
    let before = snapshot(archives.path());
    let reg = Registry::start().unwrap();
    let dest = format!("http://{}", reg.host());
    let work = workdir();
    let pushed = run(push_cmd(&link, &dest, work.path(), &[])
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", home.path().join(".cache")));
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
    assert!(
        names_under(home.path()).is_empty(),
        "a plain tar is read in place: {:?}",
        names_under(home.path())
    );
    assert_eq!(snapshot(archives.path()), before, "nothing beside the tar");

    let validated = run(validate_cmd(&gz, &dest, work.path(), &[])
        .env("HOME", home.path())
        .env("XDG_CACHE_HOME", home.path().join(".cache")));
    assert_eq!(validated.code, 0, "{}", validated.stderr);
    assert!(
        names_under(home.path()).is_empty(),
        "validate extracts nothing"
    );
    assert_eq!(snapshot(archives.path()), before);
}

#[test]
fn a_tar_gz_push_extracts_once_into_its_cache_and_reuses_it() {
    let fx = standard_tree(33);
    let home = tempfile::tempdir().unwrap();
    let archives = tempfile::tempdir().unwrap();
    let gz = archives.path().join("registry.tgz");
    tar(&["-czf", s(&gz), "-C", s(fx.root()), "."]);
    let before = snapshot(archives.path());
    let with_home = |cmd: &mut assert_cmd::Command| {
        cmd.env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path().join(".cache"));
    };
    let work = workdir();

    let first = Registry::start().unwrap();
    let mut cmd = push_cmd(&gz, &format!("http://{}", first.host()), work.path(), &[]);
    with_home(&mut cmd);
    let pushed = run(&mut cmd);
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert_tags_at(&Pusher::new(&first), &fx.truth, default_destination);
    assert_eq!(
        snapshot(archives.path()),
        before,
        "nothing beside the archive"
    );
    let base = home.path().join(".cache/ferry");
    let folders: Vec<PathBuf> = fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let cache = &folders[0];
    assert!(
        names_under(home.path())
            .iter()
            .all(|n| n == ".cache" || n == ".cache/ferry" || n.starts_with(".cache/ferry/")),
        "written outside the cache folder: {:?}",
        names_under(home.path())
    );
    let marker: Value =
        serde_json::from_slice(&fs::read(cache.join("ferry-cache.json")).unwrap()).unwrap();
    assert_eq!(marker["complete"], true);
    // Every blob of the tree is there, byte for byte, and nothing that is not a storage tree.
    for (digest, _) in fx.truth.all_blobs() {
        let extracted = fs::read(tree::blob_data(cache, &digest)).unwrap();
        assert_eq!(sha256(&extracted), digest);
    }
    let cached = snapshot(cache);

    let second = Registry::start().unwrap();
    let mut cmd = push_cmd(&gz, &format!("http://{}", second.host()), work.path(), &[]);
    with_home(&mut cmd);
    let again = run(&mut cmd);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("reusing"), "{}", again.stderr);
    assert_tags_at(&Pusher::new(&second), &fx.truth, default_destination);
    assert_eq!(snapshot(cache), cached, "the cache was reused as it was");

    let mut cmd = ferry_at(home.path());
    cmd.args(["cache", "list"]);
    let listed = run(&mut cmd);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("complete"), "{}", listed.stdout);
    assert!(listed.stdout.contains("registry.tgz"), "{}", listed.stdout);
    let mut cmd = ferry_at(home.path());
    cmd.args(["cache", "clean"]).arg(&gz);
    let cleaned = run(&mut cmd);
    assert_eq!(cleaned.code, 0, "{}", cleaned.stderr);
    assert!(!cache.exists());
    assert_eq!(snapshot(archives.path()), before);
}

#[test]
fn a_truncated_archive_lists_what_is_complete_and_names_the_cut() {
    let fx = standard_tree(34);
    let home = tempfile::tempdir().unwrap();
    let archives = tempfile::tempdir().unwrap();
    let (_, folder_rows, _) = list(home.path(), fx.root(), &[]);
    let folder_rows = rows_by_reference(&folder_rows);
    let whole = archives.path().join("whole.tar");
    repositories_first(fx.root(), &whole);
    let bytes = fs::read(&whole).unwrap();
    // Cut in the middle of the last blob's data: the images that do not use it stay whole.
    let cut_at = {
        let mut archive = tar::Archive::new(fs::File::open(&whole).unwrap());
        let last = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().unwrap().ends_with("data"))
            .map(|e| e.raw_file_position() + e.size() / 2)
            .last()
            .unwrap();
        last as usize
    };
    let plain = archives.path().join("cut.tar");
    fs::write(&plain, &bytes[..cut_at]).unwrap();
    // A gzip stream of the whole tar that stops short: its last compressed bytes are gone.
    let out = Command::new("gzip").arg("-c").arg(&whole).output().unwrap();
    let gz = archives.path().join("cut.tar.gz");
    fs::write(&gz, &out.stdout[..out.stdout.len() - 2000]).unwrap();

    for archive in [&plain, &gz] {
        let (code, rows, stderr) = list(home.path(), archive, &[]);
        assert_eq!(code, 1, "{}: {stderr}", archive.display());
        assert!(
            stderr.contains("cut short"),
            "{}: {stderr}",
            archive.display()
        );
        assert!(stderr.contains("/data"), "the member is named: {stderr}");
        let rows = rows_by_reference(&rows);
        assert_eq!(
            rows.keys().collect::<BTreeSet<_>>(),
            folder_rows.keys().collect::<BTreeSet<_>>(),
            "every tag is still listed"
        );
        let ok: Vec<&String> = rows
            .iter()
            .filter(|(_, r)| r["status"] == "ok")
            .map(|(k, _)| k)
            .collect();
        assert!(!ok.is_empty(), "some images are whole: {stderr}");
        assert!(ok.len() < rows.len(), "some images lost blobs: {stderr}");
        for reference in &ok {
            assert_eq!(rows[*reference], folder_rows[*reference], "{reference}");
        }
        assert!(names_under(home.path()).is_empty());
    }

    // A push of the cut tar moves every whole image and fails the rest.
    let reg = Registry::start().unwrap();
    let work = workdir();
    let (_, rows, _) = list(home.path(), &plain, &[]);
    let pushed = run(&mut push_cmd(
        &plain,
        &format!("http://{}", reg.host()),
        work.path(),
        &[],
    ));
    assert_eq!(pushed.code, 1, "{}", pushed.stderr);
    let pusher = Pusher::new(&reg);
    for row in &rows {
        let (repo, tag) = (
            row["repository"].as_str().unwrap(),
            row["tag"].as_str().unwrap(),
        );
        let got = pusher.get_manifest(&default_destination(repo), tag);
        if row["status"] == "ok" {
            assert_eq!(
                got.unwrap().digest,
                row["digest"].as_str().unwrap(),
                "{repo}:{tag}"
            );
        } else {
            assert!(got.is_err(), "{repo}:{tag} is broken and was not pushed");
        }
    }
}

#[test]
fn a_bad_header_checksum_is_named_with_its_member() {
    let fx = standard_tree(35);
    let home = tempfile::tempdir().unwrap();
    let archives = tempfile::tempdir().unwrap();
    let path = archives.path().join("registry.tar");
    repositories_first(fx.root(), &path);
    let mut bytes = fs::read(&path).unwrap();
    // The header of a blob's data two thirds in: its mtime field changes, its checksum no longer
    // matches (its long name, in the GNU header before it, stays readable).
    let (name, at) = {
        let mut archive = tar::Archive::new(fs::File::open(&path).unwrap());
        let data: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.path().unwrap().ends_with("data"))
            .map(|e| {
                (
                    e.path().unwrap().display().to_string(),
                    e.raw_header_position(),
                )
            })
            .collect();
        data[data.len() * 2 / 3].clone()
    };
    bytes[at as usize + 140] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let (code, rows, stderr) = list(home.path(), &path, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&name), "names {name}: {stderr}");
    assert!(stderr.contains("checksum"), "{stderr}");
    assert_eq!(rows.len(), fx.truth.tags.len(), "every tag is still listed");
    assert!(rows.iter().any(|r| r["status"] == "ok"), "{stderr}");
}

/// Appends a member with a name the tar crate's own checks would refuse.
fn raw_member(
    builder: &mut tar::Builder<fs::File>,
    name: &[u8],
    kind: tar::EntryType,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

#[test]
fn hostile_members_are_named_and_nothing_is_written_outside_the_cache() {
    let fx = standard_tree(36);
    let sandbox = tempfile::tempdir().unwrap();
    let home = sandbox.path().join("home");
    let archives = sandbox.path().join("archives");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&archives).unwrap();
    let path = archives.join("hostile.tar");
    let absolute = sandbox.path().join("absolute-escape");
    let alpine = &fx.truth.tags["alpine:3.19"];
    let layer = alpine.blobs.last().unwrap().digest.clone();
    let layer_member = tree::blob_data(Path::new(""), &layer).display().to_string();
    {
        let mut builder = tar::Builder::new(fs::File::create(&path).unwrap());
        builder.follow_symlinks(false);
        builder.append_dir_all(".", fx.root()).unwrap();
        raw_member(
            &mut builder,
            b"../escape.txt",
            tar::EntryType::Regular,
            b"escaped",
        );
        raw_member(
            &mut builder,
            absolute.to_str().unwrap().as_bytes(),
            tar::EntryType::Regular,
            b"escaped",
        );
        raw_member(
            &mut builder,
            b"docker/registry/v2/pipe",
            tar::EntryType::Fifo,
            b"",
        );
        raw_member(
            &mut builder,
            b"docker/registry/v2/tty",
            tar::EntryType::Char,
            b"",
        );
        // The layer's data, again, as a link out of the tree: the later member wins, as tar -x does.
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, &layer_member, "/etc/passwd")
            .unwrap();
        builder.finish().unwrap();
    }
    let gz = archives.join("hostile.tar.gz");
    let out = Command::new("gzip").arg("-k").arg(&path).output().unwrap();
    assert!(out.status.success());

    let broken: BTreeSet<String> = ["alpine:3.19", "alpine:latest"].map(String::from).into();
    for archive in [&path, &gz] {
        let (code, rows, stderr) = list(&home, archive, &[]);
        assert_eq!(code, 1, "{stderr}");
        for named in [
            "../escape.txt",
            absolute.to_str().unwrap(),
            "v2/pipe",
            "v2/tty",
            &layer_member,
        ] {
            assert!(stderr.contains(named), "{named} is named: {stderr}");
        }
        assert!(
            stderr.contains("FIFO") && stderr.contains("character device"),
            "{stderr}"
        );
        assert!(stderr.contains("symbolic link"), "{stderr}");
        let not_ok: BTreeSet<String> = rows_by_reference(&rows)
            .into_iter()
            .filter(|(_, r)| r["status"] != "ok")
            .map(|(k, _)| k)
            .collect();
        assert_eq!(not_ok, broken, "{stderr}");
    }

    // Push the compressed one: it is extracted into --cache-dir, and only there.
    let cache = sandbox.path().join("cache");
    let reg = Registry::start().unwrap();
    let work = sandbox.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let pushed = run(push_cmd(&gz, &format!("http://{}", reg.host()), &work, &[])
        .arg("--cache-dir")
        .arg(&cache)
        .env("HOME", &home));
    assert_eq!(pushed.code, 1, "{}", pushed.stderr);
    assert!(pushed.stderr.contains("../escape.txt"), "{}", pushed.stderr);
    assert!(!absolute.exists(), "an absolute member was written");
    let everything = names_under(sandbox.path());
    assert!(
        everything
            .iter()
            .all(|n| !n.contains("escape") && !n.ends_with("/pipe") && !n.ends_with("/tty")),
        "{everything:?}"
    );
    for name in &everything {
        assert!(
            name.starts_with("home")
                || name.starts_with("archives")
                || name.starts_with("cache")
                || name.starts_with("work"),
            "{name}"
        );
    }
    assert!(names_under(&home).is_empty(), "{:?}", names_under(&home));
    for entry in walkdir::WalkDir::new(&cache) {
        let entry = entry.unwrap();
        assert!(!entry.path_is_symlink(), "{}", entry.path().display());
    }
    let pusher = Pusher::new(&reg);
    // A signature is not pushed without its subject.
    let missing = crate::util::with_signatures(&fx.truth, &broken);
    for (reference, tag) in &fx.truth.tags {
        let got = pusher.get_manifest(&default_destination(&tag.repository), &tag.tag);
        if missing.contains(reference) {
            assert!(got.is_err(), "{reference}");
        } else {
            assert_eq!(got.unwrap().digest, tag.digest, "{reference}");
        }
    }
}

#[test]
fn an_archive_of_several_trees_needs_a_subpath() {
    let fx = standard_tree(37);
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let two = work.path().join("two");
    fs::create_dir_all(&two).unwrap();
    for name in ["old", "new"] {
        let out = Command::new("cp")
            .arg("-al")
            .arg(fx.root())
            .arg(two.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let plain = work.path().join("two.tar");
    let gz = work.path().join("two.tar.gz");
    tar(&["-cf", s(&plain), "-C", s(&two), "old", "new"]);
    tar(&["-czf", s(&gz), "-C", s(&two), "old", "new"]);
    let (_, folder_rows, _) = list(home.path(), fx.root(), &[]);
    for archive in [&plain, &gz] {
        let (code, _, stderr) = list(home.path(), archive, &[]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("more than one storage tree"), "{stderr}");
        assert!(
            stderr.contains("old/docker/registry/v2") && stderr.contains("new/docker/registry/v2"),
            "{stderr}"
        );
        assert!(stderr.contains("--subpath"), "{stderr}");
        let (code, rows, stderr) = list(home.path(), archive, &["--subpath", "new"]);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(rows, folder_rows);
    }
    let cache = work.path().join("cache");
    let reg = Registry::start().unwrap();
    let pushed = run(
        push_cmd(&gz, &format!("http://{}", reg.host()), work.path(), &[])
            .arg("--cache-dir")
            .arg(&cache),
    );
    assert_eq!(pushed.code, 2, "{}", pushed.stderr);
    assert!(pushed.stderr.contains("--subpath"), "{}", pushed.stderr);
    assert!(
        names_under(&cache).is_empty(),
        "the useless extraction is removed: {:?}",
        names_under(&cache)
    );
    let pushed = run(push_cmd(
        &gz,
        &format!("http://{}", reg.host()),
        work.path(),
        &["--subpath", "old"],
    )
    .arg("--cache-dir")
    .arg(&cache));
    assert_eq!(pushed.code, 0, "{}", pushed.stderr);
    assert_tags_at(&Pusher::new(&reg), &fx.truth, default_destination);
}

#[test]
fn export_from_a_plain_tar_copies_and_refuses_hard_links() {
    let fx = standard_tree(38);
    let work = tempfile::tempdir().unwrap();
    let plain = work.path().join("registry.tar");
    tar(&["-cf", s(&plain), "-C", s(fx.root()), "."]);
    let out = work.path().join("out");
    let export = |extra: &[&str]| {
        run(ferry()
            .current_dir(work.path())
            .arg("export")
            .arg(&plain)
            .arg("--out")
            .arg(&out)
            .args(extra))
    };
    let hard = export(&["--link", "hard"]);
    assert_eq!(hard.code, 2, "{}", hard.stderr);
    assert!(
        hard.stderr.contains("inside a tar archive"),
        "{}",
        hard.stderr
    );
    assert!(!out.exists(), "nothing written before refusing");
    let copied = export(&[]);
    assert_eq!(copied.code, 0, "{}", copied.stderr);
    for (reference, tag) in &fx.truth.tags {
        let folder = out.join(reference);
        let raw = skopeo_raw(&format!("dir:{}", folder.display()));
        assert_eq!(sha256(&raw), tag.digest, "{reference}");
        for entry in fs::read_dir(&folder).unwrap() {
            let meta = entry.unwrap().metadata().unwrap();
            assert_eq!(meta.nlink(), 1, "copies, not links");
        }
    }
}
