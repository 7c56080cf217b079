//! What can be wrong with one image in a source: each variant names the file, what was expected and what was found.

use std::path::PathBuf;

use crate::digest::{Digest, DigestError};
use crate::manifest::ManifestError;
use crate::names::{escape_controls, shown};

/// A per-image problem. It fails that image only; the run goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("damaged link {}: {error}", shown(path))]
    BadLink { path: PathBuf, error: DigestError },
    #[error("missing link {}", shown(path))]
    MissingLink { path: PathBuf },
    #[error("manifest {digest} is missing: {} does not exist", shown(path))]
    MissingManifest { digest: Digest, path: PathBuf },
    #[error(
        "manifest {digest} is corrupt: {} ({len} bytes) hashes to {found}",
        shown(path)
    )]
    CorruptManifest {
        digest: Digest,
        path: PathBuf,
        found: Digest,
        len: u64,
    },
    #[error("manifest {digest} cannot be used ({}): {error}", shown(path))]
    BadManifest {
        digest: Digest,
        path: PathBuf,
        error: ManifestError,
    },
    #[error(
        "{} blob {digest} is missing: {} does not exist",
        escape_controls(role),
        shown(path)
    )]
    MissingBlob {
        role: String,
        digest: Digest,
        path: PathBuf,
    },
    #[error(
        "{} blob {digest} has {found} bytes where the manifest says {expected}: {}",
        escape_controls(role),
        shown(path)
    )]
    BlobSize {
        role: String,
        digest: Digest,
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(
        "blob {digest} is corrupt: {} hashes to {found} ({len} bytes)",
        shown(path)
    )]
    CorruptBlob {
        digest: Digest,
        path: PathBuf,
        found: Digest,
        len: u64,
    },
    #[error(
        "{} is a symbolic link; ferry does not follow links inside a storage tree",
        shown(path)
    )]
    Symlink { path: PathBuf },
    #[error("cannot read {}: {error}", shown(path))]
    Io { path: PathBuf, error: String },
    #[error("invalid {what} name {name:?} ({})", shown(path))]
    BadName {
        what: &'static str,
        name: String,
        path: PathBuf,
    },
    #[error("not found in the source tree")]
    NotInSource,
    /// Damage in an archive (a cut-short stream, a bad header) or a member ferry refuses to read.
    #[error("{}: {}", shown(path), escape_controls(error))]
    Archive { path: PathBuf, error: String },
    #[error("{}: {inner}", escape_controls(context))]
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
