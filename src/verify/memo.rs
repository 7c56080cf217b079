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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::filter::Filters;
    use crate::inventory::{Inventory, InventoryOptions};
    use crate::source::StorageTree;

    /// Counts the manifest reads that reach the tree.
    struct Counting {
        tree: StorageTree,
        reads: Mutex<HashMap<Digest, usize>>,
    }

    impl Source for Counting {
        fn location(&self) -> &Path {
            self.tree.location()
        }
        fn repositories(
            &self,
            options: ScanOptions,
            wanted: &(dyn Fn(&str) -> bool + Sync),
        ) -> Result<Scan, SourceError> {
            self.tree.repositories(options, wanted)
        }
        fn manifest(&self, digest: &Digest) -> Result<RawManifest, Problem> {
            *self.reads.lock().unwrap().entry(*digest).or_default() += 1;
            self.tree.manifest(digest)
        }
        fn blob(&self, digest: &Digest) -> Result<BlobFile, Problem> {
            self.tree.blob(digest)
        }
        fn small_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, Problem> {
            self.tree.small_blob(digest, max)
        }
    }

    #[test]
    fn each_manifest_reaches_the_tree_once() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/registry");
        let counting = Counting {
            tree: StorageTree::open(&root).unwrap(),
            reads: Mutex::new(HashMap::new()),
        };
        let memo = Memo::new(&counting);
        let options = InventoryOptions {
            untagged: true,
            config_platforms: false,
        };
        for _ in 0..2 {
            let inventory = Inventory::build(&memo, &Filters::default(), options).unwrap();
            assert!(inventory.images.iter().all(|i| i.is_ok()));
        }
        let reads = counting.reads.into_inner().unwrap();
        // alpine:3.19 and alpine:latest share a manifest; indexes and untagged scans read children.
        assert!(reads.len() > 10, "{reads:?}");
        assert!(reads.values().all(|n| *n == 1), "{reads:?}");
    }
}
