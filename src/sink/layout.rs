//! What both export layouts share: names turned into safe paths under DIR, the "empty or a previous layout" check, file counts.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use serde::Serialize;

use super::link::LinkError;
use super::link::{Ladder, TEMP_PREFIX, Wanted};
use super::{BlobAction, SinkError};
use crate::digest::Digest;
use crate::inventory::Image;
use crate::manifest::RawManifest;
use crate::names;
use crate::source::{BlobFile, Source};
use std::io::Read;

/// The `version` file of a skopeo `dir:` image, byte for byte.
pub const DIR_VERSION: &[u8] = b"Directory Transport Version: 1.1\n";
/// The `oci-layout` file of an OCI image layout.
pub const OCI_LAYOUT: &[u8] = b"{\"imageLayoutVersion\":\"1.0.0\"}";

/// Which layout `ferry export` writes (`--layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// skopeo `dir:` folders, one per tag: DIR/<repo>:<tag>/.
    Dir,
    /// An OCI image layout per repository: DIR/<repo>/.
    Oci,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Dir => "dir",
            Layout::Oci => "oci",
        })
    }
}

/// The folder components of a repository name, checked by the name grammar and again as file names.
pub fn repository_components(name: &str) -> Result<Vec<&str>, String> {
    names::check_repository(name).map_err(|why| format!("repository name {name:?}: {why}"))?;
    let parts: Vec<&str> = name.split('/').collect();
    for part in &parts {
        check_component(part).map_err(|why| format!("repository name {name:?}: {why}"))?;
    }
    Ok(parts)
}

/// A single path component that cannot climb out of its folder or name another one.
pub fn check_component(c: &str) -> Result<(), String> {
    if c.is_empty() || c == "." || c == ".." || c.contains(['/', '\0']) {
        return Err(format!("{c:?} cannot be a folder or file name"));
    }
    Ok(())
}

/// Checks a tag for use inside a file name.
pub fn check_tag(tag: &str) -> Result<(), String> {
    names::check_tag(tag).map_err(|why| format!("tag {tag:?}: {why}"))?;
    check_component(tag)
}

/// Creates `base/<components>` one folder at a time, refusing any component that is a symbolic link
/// or not a folder, so nothing is ever written outside `base`.
pub fn make_dirs(base: &Path, components: &[&str]) -> io::Result<PathBuf> {
    let mut path = base.to_path_buf();
    for c in components {
        check_component(c).map_err(io::Error::other)?;
        path.push(c);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link; ferry does not write through links",
                    path.display()
                )));
            }
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} is in the way: it should be a folder",
                    path.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&path) {
                Ok(()) => {}
                // Another worker made it meanwhile: check what it is on the next lap.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !fs::symlink_metadata(&path)?.is_dir() {
                        return Err(io::Error::other(format!(
                            "{} is in the way: it should be a folder",
                            path.display()
                        )));
                    }
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// Opens DIR for an export: creates it, or accepts it when it is empty or a previous layout of
/// `layout` (every file inside an image folder or an OCI layout, no symbolic links). Stale
/// temporary files of an interrupted run are removed. Returns the canonical path.
pub fn prepare_out(dir: &Path, layout: Layout) -> anyhow::Result<PathBuf> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("--out {} exists and is not a folder", dir.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", dir.display())),
    }
    let root = fs::canonicalize(dir).with_context(|| format!("cannot use {}", dir.display()))?;
    let refuse = |why: String| -> anyhow::Error {
        anyhow::anyhow!(
            "refusing to export into {}: it is not empty and not a previous ferry/skopeo {layout} layout ({why}); choose an empty or new folder",
            root.display()
        )
    };
    let mut marked: HashMap<PathBuf, bool> = HashMap::new();
    let mut stale = Vec::new();
    for entry in walkdir::WalkDir::new(&root).min_depth(1) {
        let entry = entry.with_context(|| format!("cannot read {}", root.display()))?;
        let path = entry.path();
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() {
            return Err(refuse(format!(
                "{} is a symbolic link; ferry does not write through links",
                path.display()
            )));
        }
        if !kind.is_file() {
            return Err(refuse(format!("{} is not a regular file", path.display())));
        }
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            stale.push(path.to_path_buf());
            continue;
        }
        let parent = path.parent().unwrap_or(&root);
        let inside = match layout {
            Layout::Dir => parent != root && marked_by(&mut marked, parent, "version", DIR_VERSION),
            Layout::Oci => parent
                .ancestors()
                .take_while(|a| *a != root)
                .any(|a| marked_by(&mut marked, a, "oci-layout", b"")),
        };
        if !inside {
            let what = match layout {
                Layout::Dir => "a folder with a skopeo version file",
                Layout::Oci => "a folder with an oci-layout file",
            };
            return Err(refuse(format!("{} is not inside {what}", path.display())));
        }
    }
    for path in stale {
        fs::remove_file(&path)
            .with_context(|| format!("cannot remove stale temporary file {}", path.display()))?;
    }
    Ok(root)
}

/// Whether `dir` holds the marker file `name` (with exactly `content`, when given), cached.
fn marked_by(cache: &mut HashMap<PathBuf, bool>, dir: &Path, name: &str, content: &[u8]) -> bool {
    *cache.entry(dir.to_path_buf()).or_insert_with(|| {
        let marker = dir.join(name);
        match fs::symlink_metadata(&marker) {
            Ok(m) if m.is_file() => {
                content.is_empty() || fs::read(&marker).is_ok_and(|b| b == content)
            }
            _ => false,
        }
    })
}

/// One file an image needs in a layout: a manifest or a config/layer blob, and its source file.
pub struct ImageFile {
    pub source: BlobFile,
    pub digest: Digest,
    pub size: u64,
    pub is_manifest: bool,
}

impl ImageFile {
    pub fn wanted(&self) -> Wanted<'_> {
        Wanted {
            file: &self.source,
            digest: self.digest,
            size: self.size,
        }
    }
}

/// Every file of an image: its manifests (children first), then its configs and layers.
pub fn image_files(source: &dyn Source, image: &Image) -> Result<Vec<ImageFile>, SinkError> {
    let mut files = Vec::with_capacity(image.manifests.len() + image.blobs.len());
    for m in &image.manifests {
        let file = source
            .blob(&m.digest())
            .map_err(|p| SinkError::invalid(format!("manifest {}: {p}", m.digest())))?;
        files.push(ImageFile {
            source: file,
            digest: m.digest(),
            size: m.len(),
            is_manifest: true,
        });
    }
    for b in &image.blobs {
        let file = source.blob(&b.digest).map_err(|p| {
            SinkError::invalid(format!(
                "{} blob {}: the source changed: {p}",
                b.role, b.digest
            ))
        })?;
        files.push(ImageFile {
            source: file,
            digest: b.digest,
            size: b.size,
            is_manifest: false,
        });
    }
    Ok(files)
}

/// Whether every file of an image is already right where `dest` says it goes; counts them as such if so.
pub fn all_placed(
    ladder: &Ladder,
    files: &[ImageFile],
    dest: impl Fn(&ImageFile) -> PathBuf,
    counts: &FileCounts,
) -> Result<bool, SinkError> {
    for f in files {
        if !ladder.is_placed(f.wanted(), &dest(f))? {
            return Ok(false);
        }
    }
    for _ in files {
        counts.record(BlobAction::Present, 0);
    }
    Ok(true)
}

/// What happened to the files of an export, manifests included.
#[derive(Debug, Default)]
pub struct FileCounts {
    linked: AtomicU64,
    reflinked: AtomicU64,
    copied: AtomicU64,
    present: AtomicU64,
    bytes_copied: AtomicU64,
}

/// A snapshot of [`FileCounts`] for the summary and the report.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct FileTotals {
    pub linked: u64,
    pub reflinked: u64,
    pub copied: u64,
    /// Already right from an earlier run (same inode, or same size and hash).
    pub present: u64,
    /// Bytes written by copies (links and reflinks write no data).
    pub bytes_copied: u64,
}

impl FileCounts {
    pub fn record(&self, action: BlobAction, size: u64) {
        let counter = match action {
            BlobAction::Linked => &self.linked,
            BlobAction::Reflinked => &self.reflinked,
            BlobAction::Copied => {
                self.bytes_copied.fetch_add(size, Ordering::Relaxed);
                &self.copied
            }
            _ => &self.present,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self) -> FileTotals {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FileTotals {
            linked: get(&self.linked),
            reflinked: get(&self.reflinked),
            copied: get(&self.copied),
            present: get(&self.present),
            bytes_copied: get(&self.bytes_copied),
        }
    }
}

/// The source file of a manifest, which layouts link like any other blob.
pub fn manifest_file(source: &dyn Source, manifest: &RawManifest) -> Result<BlobFile, SinkError> {
    source
        .blob(&manifest.digest())
        .map_err(|p| SinkError::invalid(format!("manifest {}: {p}", manifest.digest())))
}

/// Checks that the placed manifest file holds exactly the bytes the inventory read and hashed.
pub fn check_manifest_file(dest: &Path, manifest: &RawManifest) -> Result<(), SinkError> {
    let read = fs::File::open(dest).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(manifest.len() + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    });
    match read {
        Ok(bytes) if bytes == manifest.bytes() => Ok(()),
        Ok(_) => {
            let _ = fs::remove_file(dest);
            Err(SinkError::invalid(format!(
                "{} does not hold the bytes of manifest {} read earlier from the source (did the source change during the export?)",
                dest.display(),
                manifest.digest()
            )))
        }
        Err(error) => Err(LinkError::Read {
            path: dest.to_path_buf(),
            error,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_never_become_paths() {
        for bad in [
            "..", "../etc", "a/../b", "/abs", "a//b", "a/./b", "A", "a\0b",
        ] {
            assert!(repository_components(bad).is_err(), "{bad:?}");
        }
        for bad in ["..", ".x", "a/b", "", "a\0"] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            repository_components("org/team/app").unwrap(),
            ["org", "team", "app"]
        );
        assert!(check_tag("v1..2").is_ok());
    }

    #[test]
    fn make_dirs_refuses_a_symlinked_component() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("org")).unwrap();
        let err = make_dirs(d.path(), &["org", "app:1"]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(make_dirs(d.path(), &["..", "x"]).is_err());
        let made = make_dirs(d.path(), &["a", "b:1"]).unwrap();
        assert!(made.is_dir() && made.starts_with(d.path()));
    }

    #[test]
    fn only_empty_folders_and_previous_layouts_are_accepted() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("new");
        assert!(prepare_out(&out, Layout::Dir).is_ok());
        let image = out.join("org/app:1");
        fs::create_dir_all(&image).unwrap();
        fs::write(image.join("version"), DIR_VERSION).unwrap();
        fs::write(image.join("manifest.json"), b"{}").unwrap();
        let stale = image.join(format!("{TEMP_PREFIX}abc"));
        fs::write(&stale, b"half").unwrap();
        assert!(prepare_out(&out, Layout::Dir).is_ok());
        assert!(!stale.exists());
        assert!(prepare_out(&out, Layout::Oci).is_err());
        fs::write(out.join("org/notes.txt"), b"mine").unwrap();
        let err = prepare_out(&out, Layout::Dir).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");

        let oci = d.path().join("oci");
        fs::create_dir_all(oci.join("alpine/blobs/sha256")).unwrap();
        fs::write(oci.join("alpine/oci-layout"), OCI_LAYOUT).unwrap();
        fs::write(oci.join("alpine/blobs/sha256/ab"), b"x").unwrap();
        assert!(prepare_out(&oci, Layout::Oci).is_ok());
        assert!(prepare_out(&oci, Layout::Dir).is_err());
        let file = d.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(prepare_out(&file, Layout::Dir).is_err());
    }
}
