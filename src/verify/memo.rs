//! A source that reads (and so hashes) each manifest once per run and remembers what it found.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use crate::digest::Digest;
use crate::engine::once::OnceMap;
use crate::manifest::RawManifest;
use crate::problem::Problem;
use crate::source::{BlobFile, Scan, ScanOptions, Source, SourceError};

/// What reading one manifest gave.
pub type ManifestRead = Result<Arc<RawManifest>, Problem>;

/// Wraps a source; manifests shared by many tags, indexes and repositories are read once.
pub struct Memo<'a> {
    inner: &'a dyn Source,
    manifests: OnceMap<Digest, ManifestRead>,
}

impl<'a> Memo<'a> {
    pub fn new(inner: &'a dyn Source) -> Memo<'a> {
        Memo {
            inner,
            manifests: OnceMap::new(),
        }
    }

    /// Reads a manifest, or gives what the first read of it found.
    pub fn read(&self, digest: &Digest) -> ManifestRead {
        let (read, _) = self
            .manifests
            .run(digest, || {
                Ok::<_, Infallible>(self.inner.manifest(digest).map(Arc::new))
            })
            .unwrap_or_else(|never| match never {});
        read
    }

    /// What reading `digest` found, when something asked for it.
    pub fn get(&self, digest: &Digest) -> Option<ManifestRead> {
        self.manifests.get(digest)
    }
}

impl Source for Memo<'_> {
    fn location(&self) -> &Path {
        self.inner.location()
    }

    fn repositories(
        &self,
        options: ScanOptions,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Scan, SourceError> {
        self.inner.repositories(options, wanted)
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest, Problem> {
        self.read(digest).map(|m| m.as_ref().clone())
    }

    fn blob(&self, digest: &Digest) -> Result<BlobFile, Problem> {
        self.inner.blob(digest)
    }

    fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem> {
        self.inner.small_blob(digest, max)
    }
}
