//! Sources of images: what the copy engine reads from (a storage tree as a folder or an archive, or a folder of layouts).

pub mod archive_tree;
pub mod beneath;
pub mod cache;
pub mod extract;
pub mod layouts;
pub mod members;
pub mod open;
pub mod storage_tree;
pub mod survey;
pub mod tar_index;
pub mod tar_stream;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::problem::Problem;

pub use open::{Needs, OpenOptions, open};
pub use storage_tree::StorageTree;

/// A source that cannot be used at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    #[error(
        "{path} is not a registry storage tree: expected a folder holding docker/registry/v2/ (with blobs/ and repositories/), or that docker/ or docker/registry/v2/ folder itself, a tar, tar.gz, tar.zst or tar.xz of one, or a folder of skopeo dir: or OCI layouts"
    )]
    NotATree { path: PathBuf },
    #[error("{path} holds no registry storage tree: {detail}")]
    NotATreeArchive { path: PathBuf, detail: String },
    #[error(
        "{path} is a {kind} archive, which ferry cannot read; recompress it as tar, tar.gz, tar.zst or tar.xz, or extract it (tar -xf {path} -C DIR) and pass DIR"
    )]
    Archive { path: PathBuf, kind: &'static str },
    #[error("{path} holds more than one storage tree ({}); choose one with --subpath", roots.iter().map(|r| show_root(r)).collect::<Vec<_>>().join(", "))]
    SeveralTrees { path: PathBuf, roots: Vec<String> },
    #[error("{path} has no storage tree at --subpath {subpath} (found: {})", if roots.is_empty() { "none".to_string() } else { roots.iter().map(|r| show_root(r)).collect::<Vec<_>>().join(", ") })]
    NotAtSubpath {
        path: PathBuf,
        subpath: String,
        roots: Vec<String>,
    },
    #[error("cache folder {dir}: {error}")]
    Cache { dir: PathBuf, error: String },
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A tree root inside an archive as a person would type it for --subpath.
fn show_root(root: &str) -> String {
    if root.is_empty() {
        "the archive's top (.)".to_string()
    } else {
        root.to_string()
    }
}

/// What a scan of a source found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub repositories: Vec<RepositoryEntry>,
    /// Problems that belong to no repository (an unreadable folder, a name that is not UTF-8).
    pub problems: Vec<Problem>,
}

/// One repository as a source holds it.
#[derive(Debug, Clone)]
pub struct RepositoryEntry {
    pub name: String,
    pub tags: Vec<TagEntry>,
    /// Manifest revisions, when asked for.
    pub revisions: Vec<Result<Digest, Problem>>,
    pub uploads: Vec<Upload>,
    /// Problems with the repository itself (a bad name, an unreadable folder).
    pub problems: Vec<Problem>,
}

/// A tag and what it points at now.
#[derive(Debug, Clone)]
pub struct TagEntry {
    pub name: String,
    pub target: Result<Digest, Problem>,
}

/// An upload that was started and never finished; reported, never an image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Upload {
    pub repository: String,
    pub id: String,
    pub bytes: u64,
    #[serde(serialize_with = "crate::report::path_text")]
    pub path: PathBuf,
}

/// Where a blob's bytes are on disk: a file of its own (which sinks may hard-link), or a byte
/// range of a plain tar archive (which can only be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    /// The blob's own file, or the archive holding it.
    pub path: PathBuf,
    pub len: u64,
    pub place: BlobPlace,
}

/// How a blob sits in [`BlobFile::path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPlace {
    /// The whole file is the blob.
    OwnFile,
    /// The blob is member `member` of the tar archive at `path`, its bytes starting at `offset`.
    InTar { offset: u64, member: Arc<str> },
    /// Inside a compressed archive opened for metadata only: size known, bytes not readable.
    Unread { member: Arc<str> },
}

impl BlobFile {
    /// A blob that is a file of its own.
    pub fn own(path: PathBuf, len: u64) -> BlobFile {
        BlobFile {
            path,
            len,
            place: BlobPlace::OwnFile,
        }
    }

    /// Whether the blob is a whole file of its own (only those can be hard-linked or reflinked).
    pub fn is_own_file(&self) -> bool {
        self.place == BlobPlace::OwnFile
    }

    /// Where the blob's bytes start in [`BlobFile::path`].
    pub fn offset(&self) -> u64 {
        match self.place {
            BlobPlace::InTar { offset, .. } => offset,
            _ => 0,
        }
    }

    /// The blob's name in messages: its file, or `ARCHIVE!/member`.
    pub fn name(&self) -> PathBuf {
        match &self.place {
            BlobPlace::OwnFile => self.path.clone(),
            BlobPlace::InTar { member, .. } | BlobPlace::Unread { member } => {
                member_path(&self.path, member)
            }
        }
    }

    /// A reader of exactly the blob's bytes (never following a final symbolic link).
    pub fn open(&self) -> io::Result<io::Take<File>> {
        if let BlobPlace::Unread { member } = &self.place {
            return Err(io::Error::other(format!(
                "{} was opened for metadata only; its bytes were not extracted",
                member_path(&self.path, member).display()
            )));
        }
        let mut file = File::options()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&self.path)?;
        let offset = self.offset();
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(file.take(self.len))
    }
}

/// How a member of an archive is named in messages: `ARCHIVE!/member`.
pub fn member_path(archive: &Path, member: &str) -> PathBuf {
    PathBuf::from(format!("{}!/{member}", archive.display()))
}

/// What to read when scanning a source.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanOptions {
    pub revisions: bool,
}

/// Read access to images: repositories and tags, raw manifests, blobs.
pub trait Source: Sync {
    /// Where the images come from, for messages.
    fn location(&self) -> &Path;
    /// The folder holding the files this source reads (writers must stay out of it, hard links
    /// come from it); `None` when they are inside an archive.
    fn folder(&self) -> Option<&Path> {
        None
    }
    /// The `docker/registry/v2` folder of a storage tree read in place, which `ferry verify`
    /// surveys for what lies beside the images; `None` for archives and layouts.
    fn v2_folder(&self) -> Option<&Path> {
        None
    }
    /// Repositories for which `wanted` says yes, sorted by name.
    fn repositories(
        &self,
        options: ScanOptions,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Scan, SourceError>;
    /// The exact stored bytes of a manifest, checked against its digest.
    fn manifest(&self, digest: &Digest) -> Result<RawManifest, Problem>;
    /// The local file of a blob (not hashed here).
    fn blob(&self, digest: &Digest) -> Result<BlobFile, Problem>;
    /// Reads a small blob (an image config) whole, checked against its digest.
    fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem>;
}
