//! Extracts a compressed archive's storage tree (blobs, link files) into its cache folder in one pass, and reads it from there.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use indicatif::HumanBytes;

use super::cache::{self, Identity, Lock, Marker, cache_error};
use super::members::{
    MemberKind, RootChoice, Roots, blob_data, clean_name, root_of, subpath_names, under,
};
use super::tar_stream::{self, Compression, Stop, StreamMember, Visitor};
use super::{BlobFile, Scan, ScanOptions, Source, SourceError, StorageTree, member_path};
use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::problem::Problem;
use crate::sink::layout::make_dirs;

/// Left free on the cache's filesystem beyond each blob, for the rest of the system.
const RESERVE: u64 = 64 << 20;
const COPY_BUFFER: usize = 1 << 20;
/// Link files hold 71 bytes; other small files under `repositories/` are not needed.
const MAX_LINK_FILE: u64 = 4096;

/// A storage tree extracted from a compressed archive into a cache folder.
#[derive(Debug)]
pub struct CachedTree {
    archive: PathBuf,
    folder: PathBuf,
    tree: StorageTree,
    problems: Vec<Problem>,
    /// Held (shared) for as long as the run reads the folder, so `cache clean` leaves it alone.
    _lock: Lock,
}

impl CachedTree {
    /// The cache folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }
}

/// Extracts `archive` into its cache folder under `base` (or reuses a complete earlier extraction)
/// and opens the tree there. `on_read` is told about compressed bytes as they are read.
pub fn open(
    archive: &Path,
    compression: Compression,
    subpath: Option<&str>,
    base: &Path,
    on_read: &(dyn Fn(u64) + Sync),
) -> Result<CachedTree, SourceError> {
    let identity = Identity::of(archive, subpath).map_err(|error| SourceError::Io {
        path: archive.to_path_buf(),
        error,
    })?;
    fs::create_dir_all(base).map_err(|e| cache_error(base, format!("cannot create it: {e}")))?;
    let folder = base.join(identity.folder_name());
    match fs::create_dir(&folder) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(cache_error(&folder, format!("cannot create it: {e}"))),
    }
    let lock = Lock::shared(&folder)?;
    let marker = match Marker::read(&folder) {
        Some(m) if m.complete && m.identity == identity => {
            crate::note!(
                "reusing {} extracted from {} ({} blobs, {}); `ferry cache clean` removes it",
                folder.display(),
                archive.display(),
                m.blobs,
                HumanBytes(m.blob_bytes)
            );
            m
        }
        _ => {
            lock.exclusive(&folder)?;
            let marker = extract(archive, compression, subpath, &folder, identity, on_read);
            let marker = match marker {
                Ok(m) => m,
                Err(e) => {
                    // A folder that can never be completed as keyed is no use to a later run.
                    if matches!(
                        e,
                        SourceError::SeveralTrees { .. }
                            | SourceError::NotAtSubpath { .. }
                            | SourceError::NotATreeArchive { .. }
                    ) {
                        let _ = fs::remove_dir_all(&folder);
                    }
                    return Err(e);
                }
            };
            lock.downgrade(&folder)?;
            marker
        }
    };
    let tree = StorageTree::open(&folder)?;
    let problems = marker
        .problems
        .into_iter()
        .map(|(path, error)| Problem::Archive { path, error })
        .collect();
    Ok(CachedTree {
        archive: archive.to_path_buf(),
        folder,
        tree,
        problems,
        _lock: lock,
    })
}

fn extract(
    archive: &Path,
    compression: Compression,
    subpath: Option<&str>,
    folder: &Path,
    identity: Identity,
    on_read: &(dyn Fn(u64) + Sync),
) -> Result<Marker, SourceError> {
    let mut marker = Marker::new(identity);
    marker
        .write(folder)
        .map_err(|e| cache_error(folder, format!("cannot write {}: {e}", cache::MARKER)))?;
    let needed =
        cache::estimate_extracted(archive, compression).saturating_sub(cache::bytes_under(folder));
    let free = cache::free_bytes(folder)
        .map_err(|e| cache_error(folder, format!("cannot tell its free space: {e}")))?;
    if free < needed + RESERVE {
        return Err(no_space(folder, archive, needed, free));
    }
    crate::note!(
        "extracting the storage tree of {} ({} archive) into {}",
        archive.display(),
        compression.name(),
        folder.display()
    );
    let v2 = folder.join("docker/registry/v2");
    let mut visitor = Extract {
        archive,
        folder,
        v2: v2.clone(),
        subpath,
        blob_root: None,
        roots: Roots::default(),
        pending: Vec::new(),
        symlinked_blobs: HashSet::new(),
        problems: Vec::new(),
        written: HashMap::new(),
        blobs: 0,
        blob_bytes: 0,
        buffer: vec![0u8; COPY_BUFFER],
    };
    let damage = tar_stream::stream(archive, compression, on_read, &mut visitor)?;
    let Extract {
        roots,
        pending,
        symlinked_blobs,
        mut problems,
        written,
        blobs,
        blob_bytes,
        ..
    } = visitor;
    let root = match roots.choose(subpath) {
        RootChoice::Found(root) => root,
        RootChoice::None => {
            problems.extend(damage);
            return Err(SourceError::NotATreeArchive {
                path: archive.to_path_buf(),
                detail: match problems.first() {
                    None => "no member looks like docker/registry/v2/blobs/sha256/<xx>/<digest>/data or repositories/<name>/_manifests/...".to_string(),
                    Some(p) => format!("no storage tree among the members that could be read ({} problems, the first: {p})", problems.len()),
                },
            });
        }
        RootChoice::Several(roots) => {
            return Err(SourceError::SeveralTrees {
                path: archive.to_path_buf(),
                roots,
            });
        }
        RootChoice::NotAtSubpath(roots) => {
            return Err(SourceError::NotAtSubpath {
                path: archive.to_path_buf(),
                subpath: subpath.unwrap_or_default().to_string(),
                roots,
            });
        }
    };
    fs::create_dir_all(v2.join("blobs"))
        .and_then(|()| fs::create_dir_all(v2.join("repositories")))
        .map_err(|e| cache_error(folder, format!("cannot create {}: {e}", v2.display())))?;
    for (name, what) in pending {
        let Some(rel) = under(&root, &name) else {
            continue;
        };
        let member = || member_path(archive, &name);
        match what {
            Pending::Symlink(target) => {
                // A link that came after a blob's data replaces it, as `tar -x` would: the blob is gone.
                if symlinked_blobs.contains(&name) {
                    let _ = fs::remove_file(v2.join(rel));
                }
                problems.push(Problem::Archive {
                    path: member(),
                    error: format!(
                        "a symbolic link to {:?}; ferry does not follow links inside a storage tree",
                        String::from_utf8_lossy(&target)
                    ),
                })
            }
            Pending::HardLink(target) => {
                let target = clean_name(&target).unwrap_or_default();
                match (written.get(&target), blob_data(rel)) {
                    (Some(from), Some(_)) => {
                        let dest = v2.join(rel);
                        place_dirs(&v2, rel, folder)?;
                        if fs::symlink_metadata(&dest).is_err() {
                            fs::hard_link(from, &dest)
                                .or_else(|_| fs::copy(from, &dest).map(|_| ()))
                                .map_err(|e| write_error(folder, &dest, e))?;
                        }
                    }
                    _ => problems.push(Problem::Archive {
                        path: member(),
                        error: format!(
                            "a hard link to {target:?}, which is not a blob extracted earlier"
                        ),
                    }),
                }
            }
            Pending::Dir => {
                place_dirs(&v2, &format!("{rel}/x"), folder)?;
            }
            Pending::File(bytes) => {
                let dir = place_dirs(&v2, rel, folder)?;
                let dest = v2.join(rel);
                let mut tmp = tempfile::Builder::new()
                    .prefix(".ferry-tmp-")
                    .tempfile_in(&dir)
                    .map_err(|e| write_error(folder, &dest, e))?;
                tmp.write_all(&bytes)
                    .map_err(|e| write_error(folder, &dest, e))?;
                tmp.persist(&dest)
                    .map_err(|e| write_error(folder, &dest, e.error))?;
            }
            Pending::UploadData(len) => {
                // An unfinished upload is reported with its size, never read: a sparse file of that size says it.
                place_dirs(&v2, rel, folder)?;
                let dest = v2.join(rel);
                File::create(&dest)
                    .and_then(|f| f.set_len(len))
                    .map_err(|e| write_error(folder, &dest, e))?;
            }
        }
    }
    problems.extend(damage);
    marker.complete = true;
    marker.root = root;
    marker.blobs = blobs;
    marker.blob_bytes = blob_bytes;
    marker.problems = problems
        .into_iter()
        .map(|p| match p {
            Problem::Archive { path, error } => (path, error),
            other => (archive.to_path_buf(), other.to_string()),
        })
        .collect();
    marker
        .write(folder)
        .map_err(|e| cache_error(folder, format!("cannot write {}: {e}", cache::MARKER)))?;
    Ok(marker)
}

/// What is kept of a member until the tree's root is known.
enum Pending {
    /// A link file's bytes.
    File(Vec<u8>),
    Dir,
    /// An unfinished upload's data: only its size.
    UploadData(u64),
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
}

struct Extract<'a> {
    archive: &'a Path,
    folder: &'a Path,
    v2: PathBuf,
    subpath: Option<&'a str>,
    /// The root of the first blob seen: a blob of another root means several trees.
    blob_root: Option<String>,
    roots: Roots,
    pending: Vec<(String, Pending)>,
    /// Blob data names whose last member is a symbolic link.
    symlinked_blobs: HashSet<String>,
    problems: Vec<Problem>,
    /// Blob members written, by member name, for hard links that name them.
    written: HashMap<String, PathBuf>,
    blobs: u64,
    blob_bytes: u64,
    buffer: Vec<u8>,
}

impl Extract<'_> {
    fn write_blob(
        &mut self,
        name: &str,
        hex: &str,
        len: u64,
        data: &mut dyn Read,
    ) -> Result<(), Stop> {
        let dir = self.v2.join("blobs/sha256").join(&hex[..2]).join(hex);
        let dest = dir.join("data");
        self.written.insert(name.to_string(), dest.clone());
        self.blobs += 1;
        self.blob_bytes += len;
        // An interrupted extraction left whole files only (temp + rename): keep those of the right size.
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == len) {
            return Ok(());
        }
        fs::create_dir_all(&dir).map_err(|e| Stop::Fatal(write_error(self.folder, &dir, e)))?;
        let free =
            cache::free_bytes(&dir).map_err(|e| Stop::Fatal(write_error(self.folder, &dir, e)))?;
        if free < len + RESERVE {
            return Err(Stop::Fatal(no_space(self.folder, self.archive, len, free)));
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".ferry-tmp-")
            .tempfile_in(&dir)
            .map_err(|e| Stop::Fatal(write_error(self.folder, &dest, e)))?;
        let mut copied = 0u64;
        loop {
            let n = match data.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Stop::Read(e)),
            };
            tmp.write_all(&self.buffer[..n])
                .map_err(|e| Stop::Fatal(write_error(self.folder, &dest, e)))?;
            copied += n as u64;
        }
        if copied != len {
            return Err(Stop::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("only {copied} of its {len} bytes are in the archive"),
            )));
        }
        tmp.persist(&dest)
            .map_err(|e| Stop::Fatal(write_error(self.folder, &dest, e.error)))?;
        Ok(())
    }
}

impl Visitor for Extract<'_> {
    fn member(&mut self, member: &StreamMember, data: &mut dyn Read) -> Result<(), Stop> {
        let name = match clean_name(&member.name) {
            Ok(n) => n,
            Err(why) => {
                self.problems.push(super::archive_tree::refused(
                    self.archive,
                    &member.name,
                    &why,
                ));
                return Ok(());
            }
        };
        match &member.kind {
            MemberKind::Refused(what) => {
                self.problems.push(super::archive_tree::refused(
                    self.archive,
                    &member.name,
                    &format!("it is {what}; ferry reads only files, folders and links"),
                ));
                return Ok(());
            }
            MemberKind::Ignored => return Ok(()),
            MemberKind::File | MemberKind::HardLink(_) => self.roots.see(&name),
            MemberKind::Dir | MemberKind::Symlink(_) => {}
        }
        if let (MemberKind::File, Some((prefix, hex))) = (&member.kind, blob_data(&name))
            && root_of(&name).is_some()
        {
            if let Some(subpath) = self.subpath {
                if !subpath_names(subpath, prefix) {
                    return Ok(());
                }
            } else {
                match &self.blob_root {
                    None => self.blob_root = Some(prefix.to_string()),
                    Some(root) if root != prefix => {
                        return Err(Stop::Fatal(SourceError::SeveralTrees {
                            path: self.archive.to_path_buf(),
                            roots: vec![root.clone(), prefix.to_string()],
                        }));
                    }
                    Some(_) => {}
                }
            }
            let hex = hex.to_string();
            self.symlinked_blobs.remove(&name);
            return self.write_blob(&name, &hex, member.len, data);
        }
        let in_a_tree = root_of(&name).is_some() || name.contains("blobs/");
        let pending = match &member.kind {
            MemberKind::Symlink(target) => {
                if blob_data(&name).is_some() {
                    self.symlinked_blobs.insert(name.clone());
                }
                Pending::Symlink(target.clone())
            }
            MemberKind::HardLink(target) if in_a_tree => Pending::HardLink(target.clone()),
            MemberKind::Dir if in_a_tree => Pending::Dir,
            MemberKind::File if in_a_tree && is_upload_data(&name) => {
                Pending::UploadData(member.len)
            }
            MemberKind::File
                if in_a_tree && name.ends_with("/link") && member.len <= MAX_LINK_FILE =>
            {
                let mut bytes = Vec::with_capacity(member.len as usize);
                data.take(member.len)
                    .read_to_end(&mut bytes)
                    .map_err(Stop::Read)?;
                Pending::File(bytes)
            }
            _ => return Ok(()),
        };
        self.pending.push((name, pending));
        Ok(())
    }
}

/// `.../_uploads/<id>/data`.
fn is_upload_data(name: &str) -> bool {
    let parts: Vec<&str> = name.rsplitn(3, '/').collect();
    parts.len() == 3 && parts[0] == "data" && parts[2].ends_with("/_uploads")
}

/// Creates the folders of `rel` (all but its last component) under `v2`, refusing links; returns the last folder.
fn place_dirs(v2: &Path, rel: &str, folder: &Path) -> Result<PathBuf, SourceError> {
    let parts: Vec<&str> = rel.split('/').collect();
    let dirs = &parts[..parts.len().saturating_sub(1)];
    make_dirs(v2, dirs).map_err(|e| write_error(folder, &v2.join(rel), e))
}

fn write_error(folder: &Path, path: &Path, error: io::Error) -> SourceError {
    let hint = match error.raw_os_error() {
        Some(nix::libc::ENOSPC | nix::libc::EDQUOT) => {
            " (the disk is full: free space, or pass --cache-dir on a larger filesystem; a rerun resumes)"
        }
        _ => "",
    };
    cache_error(
        folder,
        format!("cannot write {}: {error}{hint}", path.display()),
    )
}

fn no_space(folder: &Path, archive: &Path, needed: u64, free: u64) -> SourceError {
    cache_error(
        folder,
        format!(
            "not enough free space to extract {}: about {} more needed (and {} kept free), {} free; free some space or pass --cache-dir on a larger filesystem (a plain .tar needs no extraction at all)",
            archive.display(),
            HumanBytes(needed),
            HumanBytes(RESERVE),
            HumanBytes(free)
        ),
    )
}

impl Source for CachedTree {
    fn location(&self) -> &Path {
        &self.archive
    }

    fn folder(&self) -> Option<&Path> {
        Some(&self.folder)
    }

    fn repositories(
        &self,
        options: ScanOptions,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Scan, SourceError> {
        let mut scan = self.tree.repositories(options, wanted)?;
        scan.problems.splice(0..0, self.problems.iter().cloned());
        Ok(scan)
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest, Problem> {
        self.tree.manifest(digest)
    }

    fn blob(&self, digest: &Digest) -> Result<BlobFile, Problem> {
        self.tree.blob(digest)
    }

    fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem> {
        self.tree.small_blob(digest, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_data_is_told_apart() {
        assert!(is_upload_data(
            "docker/registry/v2/repositories/a/_uploads/u1/data"
        ));
        assert!(!is_upload_data(
            "docker/registry/v2/repositories/a/_uploads/u1/startedat"
        ));
        assert!(!is_upload_data(
            "docker/registry/v2/blobs/sha256/ab/abc/data"
        ));
    }
}
