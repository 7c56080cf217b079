//! What can be wrong with one image in a source: each variant names the file, what was expected and what was found.

use std::path::PathBuf;

use crate::digest::{Digest, DigestError};
use crate::manifest::ManifestError;

/// A per-image problem. It fails that image only; the run goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("damaged link {path}: {error}")]
    BadLink { path: PathBuf, error: DigestError },
    #[error("missing link {path}")]
    MissingLink { path: PathBuf },
    #[error("manifest {digest} is missing: {path} does not exist")]
    MissingManifest { digest: Digest, path: PathBuf },
    #[error("manifest {digest} is corrupt: {path} ({len} bytes) hashes to {found}")]
    CorruptManifest {
        digest: Digest,
        path: PathBuf,
        found: Digest,
        len: u64,
    },
    #[error("manifest {digest} cannot be used ({path}): {error}")]
    BadManifest {
        digest: Digest,
        path: PathBuf,
        error: ManifestError,
    },
    #[error("{role} blob {digest} is missing: {path} does not exist")]
    MissingBlob {
        role: String,
        digest: Digest,
        path: PathBuf,
    },
    #[error("{role} blob {digest} has {found} bytes where the manifest says {expected}: {path}")]
    BlobSize {
        role: String,
        digest: Digest,
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("blob {digest} is corrupt: {path} hashes to {found} ({len} bytes)")]
    CorruptBlob {
        digest: Digest,
        path: PathBuf,
        found: Digest,
        len: u64,
    },
    #[error("{path} is a symbolic link; ferry does not follow links inside a storage tree")]
    Symlink { path: PathBuf },
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: String },
    #[error("invalid {what} name {name:?} ({path})")]
    BadName {
        what: &'static str,
        name: String,
        path: PathBuf,
    },
    #[error("not found in the source tree")]
    NotInSource,
    /// Damage in an archive (a cut-short stream, a bad header) or a member ferry refuses to read.
    #[error("{path}: {error}")]
    Archive { path: PathBuf, error: String },
    #[error("{context}: {inner}")]
    Within {
        context: String,
        inner: Box<Problem>,
    },
}

impl Problem {
    pub fn io(path: impl Into<PathBuf>, error: &std::io::Error) -> Problem {
        Problem::Io {
            path: path.into(),
            error: error.to_string(),
        }
    }

    /// The same problem, said to be inside `context` (an index child, for example).
    pub fn within(self, context: impl Into<String>) -> Problem {
        Problem::Within {
            context: context.into(),
            inner: Box::new(self),
        }
    }
}
