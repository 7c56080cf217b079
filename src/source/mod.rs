//! Sources of images: what the copy engine reads from (a storage tree today).

pub mod open;
pub mod storage_tree;
pub mod survey;

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::manifest::RawManifest;
use crate::problem::Problem;

pub use storage_tree::StorageTree;

/// A source that cannot be used at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    #[error(
        "{path} is not a registry storage tree: expected a folder holding docker/registry/v2/ (with blobs/ and repositories/), or that docker/ or docker/registry/v2/ folder itself"
    )]
    NotATree { path: PathBuf },
    #[error(
        "{path} is a {kind} archive: ferry reads storage trees from folders; extract it first (tar -xf {path} -C DIR) and pass DIR"
    )]
    Archive { path: PathBuf, kind: &'static str },
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
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
    pub path: PathBuf,
}

/// A blob held as a local file (so sinks can hard-link it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    pub path: PathBuf,
    pub len: u64,
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
