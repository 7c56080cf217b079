//! The cache folders that compressed archives are extracted into: where they live, whose they are, locks, free space, listing and removal.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::SourceError;

/// Written when a cache folder is made and again, with `complete`, when its extraction ends.
pub const MARKER: &str = "ferry-cache.json";
/// Held shared while a run reads the folder, exclusive while one extracts into it or removes it.
const LOCK: &str = ".ferry-lock";
/// Bumped when what a cache folder holds changes shape.
const FORMAT: u32 = 1;

/// The cache folder base: `--cache-dir`, else `$XDG_CACHE_HOME/ferry` (`~/.cache/ferry`).
pub fn base(cache_dir: Option<&Path>) -> Result<PathBuf, SourceError> {
    match cache_dir {
        Some(dir) => Ok(dir.to_path_buf()),
        None => dirs::cache_dir()
            .map(|d| d.join("ferry"))
            .ok_or_else(|| SourceError::Cache {
                dir: PathBuf::from("~/.cache/ferry"),
                error: "there is no user cache folder (HOME is not set): pass --cache-dir DIR"
                    .to_string(),
            }),
    }
}

/// What makes an archive the same archive: where it is, its inode, size and modification time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub archive: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub subpath: Option<String>,
}

impl Identity {
    pub fn of(archive: &Path, subpath: Option<&str>) -> io::Result<Identity> {
        let archive = fs::canonicalize(archive)?;
        let meta = fs::metadata(&archive)?;
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            subpath: subpath.map(str::to_string),
            archive,
        })
    }

    /// The folder name: the archive's file name and a hash of its identity.
    pub fn folder_name(&self) -> String {
        let text = serde_json::to_string(self).expect("identity serialises");
        let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        let name: String = self
            .archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        format!("{name}-{}", &hash[..16])
    }
}

/// What a cache folder holds, as its marker file says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub format: u32,
    pub identity: Identity,
    pub complete: bool,
    /// Where the tree was inside the archive.
    pub root: String,
    /// Damage and refused members found while extracting, reported again on every reuse.
    pub problems: Vec<(PathBuf, String)>,
    pub blobs: u64,
    pub blob_bytes: u64,
}

impl Marker {
    pub fn new(identity: Identity) -> Marker {
        Marker {
            format: FORMAT,
            identity,
            complete: false,
            root: String::new(),
            problems: Vec::new(),
            blobs: 0,
            blob_bytes: 0,
        }
    }

    pub fn read(folder: &Path) -> Option<Marker> {
        let bytes = fs::read(folder.join(MARKER)).ok()?;
        serde_json::from_slice::<Marker>(&bytes)
            .ok()
            .filter(|m| m.format == FORMAT)
    }

    /// Writes the marker as temp + rename, so it is whole or absent.
    pub fn write(&self, folder: &Path) -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".ferry-tmp-")
            .tempfile_in(folder)?;
        tmp.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
        tmp.persist(folder.join(MARKER)).map_err(|e| e.error)?;
        Ok(())
    }
}

/// How a run holds a cache folder.
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// Opens (creating) the folder's lock file and takes it shared without waiting.
    pub fn shared(folder: &Path) -> Result<Lock, SourceError> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(folder.join(LOCK))
            .map_err(|e| cache_error(folder, format!("cannot open its lock file: {e}")))?;
        file.try_lock_shared().map_err(|_| busy(folder))?;
        Ok(Lock { file })
    }

    /// Upgrades to exclusive without waiting: fails when another run reads or extracts.
    pub fn exclusive(&self, folder: &Path) -> Result<(), SourceError> {
        self.file.try_lock().map_err(|_| busy(folder))
    }

    /// Back to shared once the extraction is done.
    pub fn downgrade(&self, folder: &Path) -> Result<(), SourceError> {
        self.file.try_lock_shared().map_err(|_| busy(folder))
    }
}

fn busy(folder: &Path) -> SourceError {
    cache_error(
        folder,
        "another ferry run is extracting into it or removing it; try again when it is done"
            .to_string(),
    )
}

pub fn cache_error(dir: &Path, error: String) -> SourceError {
    SourceError::Cache {
        dir: dir.to_path_buf(),
        error,
    }
}

/// Bytes free for an unprivileged writer on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// About how many bytes extracting the archive writes: the stream's own claim of its
/// uncompressed size where it makes one (gzip's trailer for archives under 4 GiB, a zstd frame
/// header), and never less than the compressed size (registry blobs are already compressed, so
/// the archive barely shrinks them).
pub fn estimate_extracted(path: &Path, compression: super::tar_stream::Compression) -> u64 {
    use super::tar_stream::Compression;
    let Ok(mut file) = File::open(path) else {
        return 0;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let claimed = match compression {
        Compression::Gzip if (18..(1 << 32)).contains(&len) => {
            use std::io::{Seek, SeekFrom};
            let mut trailer = [0u8; 4];
            file.seek(SeekFrom::End(-4))
                .and_then(|_| file.read_exact(&mut trailer))
                .map(|_| u64::from(u32::from_le_bytes(trailer)))
                .unwrap_or(0)
        }
        Compression::Zstd => {
            let mut head = [0u8; 18];
            let n = file.read(&mut head).unwrap_or(0);
            zstd::zstd_safe::get_frame_content_size(&head[..n])
                .ok()
                .flatten()
                .unwrap_or(0)
        }
        _ => 0,
    };
    claimed.max(len)
}

/// Bytes of the regular files under `dir` (what an interrupted extraction already wrote).
pub fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// One cache folder under the base.
#[derive(Debug, Serialize)]
pub struct CacheEntry {
    pub folder: PathBuf,
    pub archive: Option<PathBuf>,
    pub complete: bool,
    pub bytes: u64,
}

/// Every ferry cache folder under `base` (those holding ferry's lock file; nothing else is touched).
pub fn entries(base: &Path) -> io::Result<Vec<CacheEntry>> {
    let mut out = Vec::new();
    let read = match fs::read_dir(base) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in read {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let folder = entry.path();
        if !fs::symlink_metadata(folder.join(LOCK)).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let marker = Marker::read(&folder);
        out.push(CacheEntry {
            archive: marker.as_ref().map(|m| m.identity.archive.clone()),
            complete: marker.as_ref().is_some_and(|m| m.complete),
            bytes: bytes_under(&folder),
            folder,
        });
    }
    out.sort_by(|a, b| a.folder.cmp(&b.folder));
    Ok(out)
}

/// Removes one cache folder unless a run holds it.
pub fn remove(folder: &Path) -> Result<(), SourceError> {
    let lock = Lock::shared(folder)?;
    lock.exclusive(folder)?;
    fs::remove_dir_all(folder).map_err(|e| cache_error(folder, format!("cannot remove it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_name_changes_with_the_archive_and_the_subpath() {
        let d = tempfile::tempdir().unwrap();
        let tar = d.path().join("my registry.tar.gz");
        fs::write(&tar, b"x").unwrap();
        let a = Identity::of(&tar, None).unwrap();
        let b = Identity::of(&tar, Some("srv")).unwrap();
        assert!(
            a.folder_name().starts_with("my_registry.tar.gz-"),
            "{}",
            a.folder_name()
        );
        assert_ne!(a.folder_name(), b.folder_name());
        assert_eq!(
            a.folder_name(),
            Identity::of(&tar, None).unwrap().folder_name()
        );
        fs::write(&tar, b"xy").unwrap();
        assert_ne!(
            a.folder_name(),
            Identity::of(&tar, None).unwrap().folder_name()
        );
    }

    #[test]
    fn a_held_folder_is_not_removed() {
        let d = tempfile::tempdir().unwrap();
        let folder = d.path().join("c");
        fs::create_dir(&folder).unwrap();
        let held = Lock::shared(&folder).unwrap();
        held.exclusive(&folder).unwrap();
        assert!(remove(&folder).is_err());
        assert!(folder.exists());
        drop(held);
        remove(&folder).unwrap();
        assert!(!folder.exists());
    }
}
