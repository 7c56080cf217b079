//! The ground truth of a generated storage tree: what was pushed, as JSON tests can compare to.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use crate::media::Platform;

/// Everything a scenario pushed, keyed so tests can compare with what ferry finds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// `"repo:tag"` → the image the tag points at now.
    pub tags: BTreeMap<String, TaggedImage>,
    /// Manifests present in a repository's revisions that no tag points at now and that
    /// are not children of any index in that repository. Sorted by (repository, digest).
    pub untagged: Vec<UntaggedManifest>,
    /// Upload sessions left open (`_uploads/<uuid>/`).
    pub uploads: Vec<UnfinishedUpload>,
}

/// One tag and the manifest it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaggedImage {
    pub repository: String,
    pub tag: String,
    /// `sha256:<hex>` of the manifest bytes.
    pub digest: String,
    pub media_type: String,
    /// `docker`, `docker-list`, `oci`, `oci-index` or `artifact`.
    pub kind: String,
    /// For indexes: the platform of each child, in the same order as `children`.
    pub platforms: Vec<Platform>,
    /// For indexes: the child manifest digests.
    pub children: Vec<String>,
    /// Every config and layer blob referenced, children included, foreign layers excluded.
    /// Deduplicated, in order of first reference.
    pub blobs: Vec<BlobRef>,
    /// Digests of foreign (non-distributable, never uploaded) layers.
    pub foreign_layers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UntaggedManifest {
    pub repository: String,
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnfinishedUpload {
    pub repository: String,
    pub uuid: String,
}

pub const KIND_DOCKER: &str = "docker";
pub const KIND_DOCKER_LIST: &str = "docker-list";
pub const KIND_OCI: &str = "oci";
pub const KIND_OCI_INDEX: &str = "oci-index";
pub const KIND_ARTIFACT: &str = "artifact";

impl Truth {
    /// Reads a truth file written by [`Truth::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Truth> {
        let path = path.as_ref();
        let text = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes pretty JSON (with a final newline).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Records a tag (replacing an earlier image under the same `repo:tag`).
    pub fn add_tag(&mut self, image: TaggedImage) {
        self.tags
            .insert(format!("{}:{}", image.repository, image.tag), image);
    }

    /// Every repository that has a tag, an untagged manifest or an upload.
    pub fn repositories(&self) -> BTreeSet<String> {
        let mut repos: BTreeSet<String> =
            self.tags.values().map(|t| t.repository.clone()).collect();
        repos.extend(self.untagged.iter().map(|u| u.repository.clone()));
        repos.extend(self.uploads.iter().map(|u| u.repository.clone()));
        repos
    }

    /// The distinct blobs referenced by all tags, by digest.
    pub fn all_blobs(&self) -> BTreeMap<String, u64> {
        self.tags
            .values()
            .flat_map(|t| t.blobs.iter())
            .map(|b| (b.digest.clone(), b.size))
            .collect()
    }

    /// Sorts the lists so that equal content gives equal JSON.
    pub fn normalize(&mut self) {
        self.untagged.sort();
        self.untagged.dedup();
        self.uploads.sort();
    }
}

/// Appends `b` to `blobs` unless a blob with that digest is already there.
pub fn push_unique(blobs: &mut Vec<BlobRef>, b: BlobRef) {
    if !blobs.iter().any(|x| x.digest == b.digest) {
        blobs.push(b);
    }
}
