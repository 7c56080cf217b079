//! Places one blob file in a layout: hard link, else reflink, else a copy hashed on the way; always temp + rename.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::engine::Fatal;
use crate::engine::once::OnceMap;
use crate::sink::{BlobAction, SinkError};
use crate::source::BlobFile;

/// Every temporary file ferry creates in a layout starts with this (stale ones are removed on the next run).
pub const TEMP_PREFIX: &str = ".ferry-tmp-";

const COPY_BUFFER: usize = 1 << 20;

/// How blob files get into a layout (`--link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkMode {
    /// Hard link on the same filesystem, else reflink, else copy.
    Auto,
    /// Hard links only; fails when the layout is on another filesystem.
    Hard,
    /// Reflinks (copy-on-write clones) only; fails where the filesystem has none.
    Reflink,
    /// Copies, hashed while copying.
    Copy,
}

impl std::fmt::Display for LinkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkMode::Auto => "auto",
            LinkMode::Hard => "hard",
            LinkMode::Reflink => "reflink",
            LinkMode::Copy => "copy",
        })
    }
}

/// A blob's source file and what its bytes must be.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub file: &'a BlobFile,
    pub digest: Digest,
    pub size: u64,
}

/// Why a file could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "blob {digest} is corrupt: {path} ({len} bytes) hashes to {found}, expected {expected_len} bytes"
    )]
    Corrupt {
        digest: Digest,
        path: PathBuf,
        found: Digest,
        len: u64,
        expected_len: u64,
    },
    #[error("cannot hard-link {src} to {dest}: {reason}")]
    NoHardLink {
        src: PathBuf,
        dest: PathBuf,
        reason: String,
        /// Every other blob would fail too (another filesystem, no permission), unlike one inode's link limit.
        global: bool,
    },
    #[error("cannot reflink {src} to {dest}: {reason}")]
    NoReflink {
        src: PathBuf,
        dest: PathBuf,
        reason: String,
    },
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
}

impl LinkError {
    /// What every further file would hit too, as the cause that stops the run: a full or
    /// read-only destination, a forced link mode the filesystems cannot do.
    pub fn fatal(&self) -> Option<Fatal> {
        match self {
            LinkError::NoHardLink { global: true, .. } | LinkError::NoReflink { .. } => {
                Some(Fatal::Output {
                    message: self.to_string(),
                })
            }
            // By kind, not errno: tempfile wraps its errors with the path, keeping only the kind.
            LinkError::Write { path, error } => match error.kind() {
                kind @ (io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => {
                    Some(Fatal::DiskFull {
                        path: parent(path).to_path_buf(),
                        error: if kind == io::ErrorKind::StorageFull {
                            "no space left on device".to_string()
                        } else {
                            "disk quota exceeded".to_string()
                        },
                        free: free_space(path),
                        needed: None,
                    })
                }
                io::ErrorKind::ReadOnlyFilesystem => Some(Fatal::Output {
                    message: self.to_string(),
                }),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Bytes free for an unprivileged writer on the filesystem holding `path` (or its nearest folder).
pub fn free_space(path: &Path) -> Option<u64> {
    let dir = path.ancestors().find(|p| p.is_dir())?;
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

impl From<LinkError> for SinkError {
    fn from(e: LinkError) -> SinkError {
        match e.fatal() {
            Some(f) => SinkError::Fatal(f),
            None => SinkError::Image(e.into()),
        }
    }
}

/// The link ladder with its `--link` mode and `--verify` choice.
pub struct Ladder {
    mode: LinkMode,
    /// Hash sources before linking them (a hard link or reflink passes corruption on).
    verify: bool,
    /// Source files (or archive ranges) hashed this run: a base layer shared by a thousand images is read once.
    verified: OnceMap<(PathBuf, u64), ()>,
}

impl Ladder {
    pub fn new(mode: LinkMode, verify: bool) -> Ladder {
        Ladder {
            mode,
            verify,
            verified: OnceMap::new(),
        }
    }

    /// Hashes a source file once per run.
    fn verify_source(&self, want: Wanted) -> Result<(), LinkError> {
        let key = (want.file.path.clone(), want.file.offset());
        self.verified.run(&key, || check_file(want)).map(|_| ())
    }

    /// Whether `dest` already holds the blob as this mode would leave it: the source's own inode
    /// (auto, hard), or another file of the right size and hash (auto, reflink, copy).
    pub fn is_placed(&self, want: Wanted, dest: &Path) -> Result<bool, LinkError> {
        let meta = match fs::symlink_metadata(dest) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => {
                return Err(LinkError::Write {
                    path: dest.to_path_buf(),
                    error,
                });
            }
        };
        if !meta.is_file() || meta.len() != want.size {
            return Ok(false);
        }
        let same_inode = want.file.is_own_file() && {
            let src = fs::symlink_metadata(&want.file.path).map_err(|error| LinkError::Read {
                path: want.file.path.clone(),
                error,
            })?;
            (meta.dev(), meta.ino()) == (src.dev(), src.ino())
        };
        match (self.mode, same_inode) {
            (LinkMode::Auto | LinkMode::Hard, true) => {
                if self.verify {
                    self.verify_source(want)?;
                }
                Ok(true)
            }
            (LinkMode::Hard, false) | (LinkMode::Reflink | LinkMode::Copy, true) => Ok(false),
            (LinkMode::Auto | LinkMode::Reflink | LinkMode::Copy, false) => {
                let (found, len) = hash_file(dest)?;
                Ok(found == want.digest && len == want.size)
            }
        }
    }

    /// Puts the blob at `dest` (replacing whatever wrong file is there) and says how.
    /// `progress` is told about bytes as they are copied.
    pub fn place(
        &self,
        want: Wanted,
        dest: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<BlobAction, LinkError> {
        if self.is_placed(want, dest)? {
            progress(want.size);
            return Ok(BlobAction::Present);
        }
        check_size(want)?;
        if self.verify && self.mode != LinkMode::Copy && want.file.is_own_file() {
            self.verify_source(want)?;
        }
        if !want.file.is_own_file() {
            // A member of an archive is a byte range, not a file: it can only be copied.
            let reason = format!(
                "{} is inside an archive, not a file of its own (use --link copy or auto)",
                want.file.name().display()
            );
            match self.mode {
                LinkMode::Hard => {
                    return Err(LinkError::NoHardLink {
                        src: want.file.name(),
                        dest: dest.to_path_buf(),
                        reason,
                        global: true,
                    });
                }
                LinkMode::Reflink => {
                    return Err(LinkError::NoReflink {
                        src: want.file.name(),
                        dest: dest.to_path_buf(),
                        reason,
                    });
                }
                LinkMode::Auto | LinkMode::Copy => {
                    copy(want, dest, progress)?;
                    return Ok(BlobAction::Copied);
                }
            }
        }
        if matches!(self.mode, LinkMode::Auto | LinkMode::Hard) {
            match hard_link(&want.file.path, dest) {
                Ok(()) => {
                    progress(want.size);
                    return Ok(BlobAction::Linked);
                }
                Err(e) if self.mode == LinkMode::Auto && link_impossible(&e) => {}
                Err(e) if link_impossible(&e) => {
                    return Err(LinkError::NoHardLink {
                        src: want.file.path.clone(),
                        dest: dest.to_path_buf(),
                        reason: explain(&e),
                        global: e.raw_os_error() != Some(nix::libc::EMLINK),
                    });
                }
                Err(error) => return Err(classify(error, &want.file.path, dest)),
            }
        }
        if matches!(self.mode, LinkMode::Auto | LinkMode::Reflink) {
            match reflink(&want.file.path, dest) {
                Ok(()) => {
                    progress(want.size);
                    return Ok(BlobAction::Reflinked);
                }
                Err(e) if self.mode == LinkMode::Auto && reflink_impossible(&e) => {}
                Err(e) if reflink_impossible(&e) => {
                    return Err(LinkError::NoReflink {
                        src: want.file.path.clone(),
                        dest: dest.to_path_buf(),
                        reason: explain(&e),
                    });
                }
                Err(error) => return Err(classify(error, &want.file.path, dest)),
            }
        }
        copy(want, dest, progress)?;
        Ok(BlobAction::Copied)
    }
}

/// A fresh temporary name in `dir` (nothing is created).
pub fn temp_path(dir: &Path) -> PathBuf {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(12)
        .collect();
    dir.join(format!("{TEMP_PREFIX}{suffix}"))
}

/// Writes a small file (a `version`, an `index.json`) as temp + rename, unless it already holds `bytes`.
pub fn write_small(dest: &Path, bytes: &[u8]) -> Result<(), LinkError> {
    if let Ok(meta) = fs::symlink_metadata(dest)
        && meta.is_file()
        && meta.len() == bytes.len() as u64
        && fs::read(dest).is_ok_and(|b| b == bytes)
    {
        return Ok(());
    }
    let write_err = |error| LinkError::Write {
        path: dest.to_path_buf(),
        error,
    };
    let dir = parent(dest);
    let mut tmp = temp_file(dir).map_err(write_err)?;
    tmp.write_all(bytes).map_err(write_err)?;
    tmp.persist(dest).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Hashes a file (not following a final symlink).
pub fn hash_file(path: &Path) -> Result<(Digest, u64), LinkError> {
    let read_err = |error| LinkError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = open_nofollow(path).map_err(read_err)?;
    Digest::of_reader(file).map_err(read_err)
}

/// A temporary file in `dir`, readable by all like skopeo's (0644 whatever the umask).
fn temp_file(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    Ok(tmp)
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Fails when the source does not hash to the wanted blob.
fn check_file(want: Wanted) -> Result<(), LinkError> {
    let read_err = |error| LinkError::Read {
        path: want.file.name(),
        error,
    };
    let reader = want.file.open().map_err(read_err)?;
    let (found, len) = Digest::of_reader(reader).map_err(read_err)?;
    if found != want.digest || len != want.size {
        return Err(LinkError::Corrupt {
            digest: want.digest,
            path: want.file.name(),
            found,
            len,
            expected_len: want.size,
        });
    }
    Ok(())
}

/// A source whose size is wrong is refused before anything is linked (a cheap check hashes cannot skip).
fn check_size(want: Wanted) -> Result<(), LinkError> {
    let len = if want.file.is_own_file() {
        let meta = fs::symlink_metadata(&want.file.path).map_err(|error| LinkError::Read {
            path: want.file.path.clone(),
            error,
        })?;
        if !meta.is_file() {
            return Err(LinkError::Read {
                path: want.file.path.clone(),
                error: io::Error::other("not a regular file"),
            });
        }
        meta.len()
    } else {
        want.file.len
    };
    if len != want.size {
        return Err(LinkError::Read {
            path: want.file.name(),
            error: io::Error::other(format!(
                "it has {} bytes where the manifest says {} for {}",
                len, want.size, want.digest
            )),
        });
    }
    Ok(())
}

/// Hard link under a temporary name, then rename onto `dest` (atomic, replaces a wrong file).
fn hard_link(src: &Path, dest: &Path) -> io::Result<()> {
    let dir = parent(dest);
    let tmp = loop {
        let tmp = temp_path(dir);
        match fs::hard_link(src, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let renamed = fs::rename(&tmp, dest);
    // rename() between two links of one inode succeeds and leaves both names.
    let _ = fs::remove_file(&tmp);
    renamed
}

nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Reflink (FICLONE) into a temporary file, then rename onto `dest`.
fn reflink(src: &Path, dest: &Path) -> io::Result<()> {
    let source = open_nofollow(src)?;
    let tmp = temp_file(parent(dest))?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE takes the source fd as its argument.
    unsafe { ficlone(tmp.as_file().as_raw_fd(), source.as_raw_fd() as _) }
        .map_err(io::Error::from)?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

/// Streams `src` into a temporary file, hashing on the way; checks digest and size, fsyncs, renames.
fn copy(want: Wanted, dest: &Path, progress: &dyn Fn(u64)) -> Result<(), LinkError> {
    let read_err = |error| LinkError::Read {
        path: want.file.name(),
        error,
    };
    let write_err = |error| LinkError::Write {
        path: dest.to_path_buf(),
        error,
    };
    let mut source = want.file.open().map_err(read_err)?;
    let mut tmp = temp_file(parent(dest)).map_err(write_err)?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(write_err)?;
        progress(n as u64);
    }
    let (found, len) = hasher.finish();
    if found != want.digest || len != want.size {
        return Err(LinkError::Corrupt {
            digest: want.digest,
            path: want.file.name(),
            found,
            len,
            expected_len: want.size,
        });
    }
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(dest).map_err(|e| write_err(e.error))?;
    Ok(())
}

/// Errors meaning "hard links cannot work here", as opposed to a failing disk or a missing file.
fn link_impossible(e: &io::Error) -> bool {
    use nix::libc::*;
    matches!(
        e.raw_os_error(),
        Some(EXDEV | EPERM | EMLINK | EOPNOTSUPP | ENOSYS)
    )
}

/// Errors meaning "this filesystem (pair) has no reflinks".
fn reflink_impossible(e: &io::Error) -> bool {
    use nix::libc::*;
    matches!(
        e.raw_os_error(),
        Some(EXDEV | EOPNOTSUPP | ENOTTY | EINVAL | ENOSYS | EPERM)
    )
}

fn explain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(nix::libc::EXDEV) => {
            "the source and the layout are on different filesystems (use --link auto to fall back to reflinks or copies, or put DIR on the source's filesystem)".to_string()
        }
        Some(nix::libc::EPERM) => format!(
            "{e}: with fs.protected_hardlinks, hard links need ownership of the source files or write access to them (run as the registry's user, or use --link auto)"
        ),
        Some(nix::libc::EMLINK) => format!(
            "{e}: this blob already has as many hard links as the filesystem allows (use --link auto to copy it instead)"
        ),
        Some(nix::libc::EOPNOTSUPP | nix::libc::ENOTTY | nix::libc::EINVAL) => format!(
            "{e}: the filesystem does not support this (use --link auto to fall back to copies)"
        ),
        _ => e.to_string(),
    }
}

/// Attributes an I/O error to the source when the source is unreadable, else to the destination.
fn classify(error: io::Error, src: &Path, dest: &Path) -> LinkError {
    if error.kind() == io::ErrorKind::NotFound && !src.exists() {
        return LinkError::Read {
            path: src.to_path_buf(),
            error,
        };
    }
    LinkError::Write {
        path: dest.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(dir: &Path, name: &str, bytes: &[u8]) -> (PathBuf, Digest) {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        (path, Digest::of(bytes))
    }

    fn no_temp_files(dir: &Path) -> bool {
        fs::read_dir(dir).unwrap().all(|e| {
            !e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(TEMP_PREFIX)
        })
    }

    #[test]
    fn auto_hard_links_on_one_filesystem_and_skips_a_second_time() {
        let d = tempfile::tempdir().unwrap();
        let (src, digest) = blob(d.path(), "src", b"layer bytes");
        let dest = d.path().join("out");
        let ladder = Ladder::new(LinkMode::Auto, false);
        let file = BlobFile::own(src.clone(), fs::metadata(&src).unwrap().len());
        let want = Wanted {
            file: &file,
            digest,
            size: 11,
        };
        assert_eq!(
            ladder.place(want, &dest, &|_| {}).unwrap(),
            BlobAction::Linked
        );
        assert_eq!(
            fs::metadata(&dest).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        assert_eq!(
            ladder.place(want, &dest, &|_| {}).unwrap(),
            BlobAction::Present
        );
        assert!(no_temp_files(d.path()));
    }

    #[test]
    fn copy_hashes_and_rejects_a_corrupt_source_without_leaving_a_file() {
        let d = tempfile::tempdir().unwrap();
        let (src, _) = blob(d.path(), "src", b"flipped bits");
        let digest = Digest::of(b"original bits");
        let dest = d.path().join("out");
        let ladder = Ladder::new(LinkMode::Copy, false);
        let file = BlobFile::own(src.clone(), fs::metadata(&src).unwrap().len());
        let want = Wanted {
            file: &file,
            digest,
            size: 12,
        };
        let err = ladder.place(want, &dest, &|_| {}).unwrap_err();
        assert!(matches!(err, LinkError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&src.display().to_string()));
        assert!(!dest.exists());
        assert!(no_temp_files(d.path()));
    }

    #[test]
    fn a_wrong_file_is_replaced_and_a_copy_is_its_own_inode() {
        let d = tempfile::tempdir().unwrap();
        let (src, digest) = blob(d.path(), "src", b"good");
        let dest = d.path().join("out");
        fs::write(&dest, b"bad!").unwrap();
        let ladder = Ladder::new(LinkMode::Copy, false);
        let file = BlobFile::own(src.clone(), fs::metadata(&src).unwrap().len());
        let want = Wanted {
            file: &file,
            digest,
            size: 4,
        };
        assert_eq!(
            ladder.place(want, &dest, &|_| {}).unwrap(),
            BlobAction::Copied
        );
        assert_eq!(fs::read(&dest).unwrap(), b"good");
        assert_ne!(
            fs::metadata(&dest).unwrap().ino(),
            fs::metadata(&src).unwrap().ino()
        );
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o777, 0o644);
        assert_eq!(
            ladder.place(want, &dest, &|_| {}).unwrap(),
            BlobAction::Present
        );
    }

    #[test]
    fn verify_catches_corruption_a_hard_link_would_pass_on() {
        let d = tempfile::tempdir().unwrap();
        let (src, _) = blob(d.path(), "src", b"rotten");
        let ladder = Ladder::new(LinkMode::Auto, true);
        let file = BlobFile::own(src.clone(), fs::metadata(&src).unwrap().len());
        let want = Wanted {
            file: &file,
            digest: Digest::of(b"fresh!"),
            size: 6,
        };
        let dest = d.path().join("out");
        assert!(matches!(
            ladder.place(want, &dest, &|_| {}),
            Err(LinkError::Corrupt { .. })
        ));
        assert!(!dest.exists());
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let (src, digest) = blob(d.path(), "src", b"data");
        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let dest = d.path().join("out");
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        let ladder = Ladder::new(LinkMode::Copy, false);
        let file = BlobFile::own(src.clone(), fs::metadata(&src).unwrap().len());
        let want = Wanted {
            file: &file,
            digest,
            size: 4,
        };
        ladder.place(want, &dest, &|_| {}).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(fs::symlink_metadata(&dest).unwrap().is_file());
    }

    #[test]
    fn reflink_mode_fails_clearly_where_the_filesystem_has_none() {
        let d = tempfile::tempdir().unwrap();
        let (src, digest) = blob(d.path(), "src", b"data");
        let dest = d.path().join("out");
        let ladder = Ladder::new(LinkMode::Reflink, false);
        let file = BlobFile::own(src.clone(), fs::metadata(&src).unwrap().len());
        let want = Wanted {
            file: &file,
            digest,
            size: 4,
        };
        match ladder.place(want, &dest, &|_| {}) {
            // btrfs, xfs with reflink=1, bcachefs...
            Ok(action) => assert_eq!(action, BlobAction::Reflinked),
            Err(e) => {
                assert!(matches!(e, LinkError::NoReflink { .. }), "{e}");
                assert!(e.fatal().is_some());
                assert!(!dest.exists());
            }
        }
        assert!(no_temp_files(d.path()));
    }

    #[test]
    fn write_small_replaces_atomically_and_skips_equal_content() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("version");
        write_small(&dest, b"one\n").unwrap();
        let ino = fs::metadata(&dest).unwrap().ino();
        write_small(&dest, b"one\n").unwrap();
        assert_eq!(fs::metadata(&dest).unwrap().ino(), ino);
        write_small(&dest, b"two\n").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two\n");
        assert!(no_temp_files(d.path()));
    }
}
