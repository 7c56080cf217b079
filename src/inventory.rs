//! The inventory of a source: each selected tag resolved to an `Image` (manifests, children, blobs, problems).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::filter::{Filters, ImageRef};
use crate::manifest::{
    Descriptor, MAX_CONFIG_BYTES, MAX_INDEX_DEPTH, ManifestKind, Platform, RawManifest,
    config_platform,
};
use crate::problem::Problem;
use crate::source::{ScanOptions, Source, SourceError, Upload};

/// A blob an image needs: a config or a layer, with the role it plays (for messages). The source
/// has it (one it lacks is a problem of the image instead); its file is asked for again when the
/// blob is copied (`Source::blob`), so a run over many images holds no paths.
#[derive(Debug, Clone)]
pub struct BlobRef {
    pub digest: Digest,
    /// Size the manifest declares (schema1: the file's size).
    pub size: u64,
    pub media_type: Cow<'static, str>,
    pub role: String,
}

/// What one manifest of an image refers to, as indexes into the image's `manifests` and `blobs`
/// (children and blobs that could be resolved; a blob shared by two children is listed by both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub children: Vec<usize>,
    pub blobs: Vec<usize>,
}

/// What an image keeps of one of its manifests once resolved: what it is, not its bytes. A run
/// over a million tags cannot hold every manifest; whoever needs the bytes or the parsed view
/// reads them again from the source (`Source::manifest`), which checks them against the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRef {
    digest: Digest,
    kind: ManifestKind,
    media_type: Cow<'static, str>,
    type_label: &'static str,
    len: u64,
    /// The manifest a referrer (a signature, an attestation) names in its `subject`.
    subject: Option<Digest>,
}

impl ManifestRef {
    pub fn of(manifest: &RawManifest) -> ManifestRef {
        ManifestRef {
            digest: manifest.digest(),
            kind: manifest.kind(),
            media_type: crate::manifest::media_type::intern(manifest.media_type()),
            type_label: manifest.type_label(),
            len: manifest.len(),
            subject: manifest.subject().map(|d| d.digest),
        }
    }

    /// As [`RawManifest::subject`]: the digest a referrer names.
    pub fn subject(&self) -> Option<Digest> {
        self.subject
    }
    pub fn digest(&self) -> Digest {
        self.digest
    }
    pub fn kind(&self) -> ManifestKind {
        self.kind
    }
    pub fn media_type(&self) -> &str {
        &self.media_type
    }
    /// As [`RawManifest::type_label`].
    pub fn type_label(&self) -> &'static str {
        self.type_label
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One tag (or untagged manifest) of one repository, resolved as far as the source allows.
#[derive(Debug, Clone)]
pub struct Image {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// Every manifest of the image in push order: children before the index that lists them.
    pub manifests: Vec<ManifestRef>,
    /// What each manifest (same order) refers to: the one resolution every consumer reads.
    pub refs: Vec<Refs>,
    /// Configs and layers of every manifest, each digest once; foreign layers excluded.
    pub blobs: Vec<BlobRef>,
    /// Foreign layers (with `urls`): they may legitimately be absent.
    pub foreign: Vec<Descriptor>,
    /// Index entries' platforms, or the config's platform for a single image.
    pub platforms: Vec<Platform>,
    pub problems: Vec<Problem>,
}

impl Image {
    fn new(repository: &str, tag: Option<&str>, digest: Option<Digest>) -> Image {
        Image {
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
            manifests: Vec::new(),
            refs: Vec::new(),
            blobs: Vec::new(),
            foreign: Vec::new(),
            platforms: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Gives back what the resolution over-allocated: a million images are held at once.
    fn shrink_to_fit(&mut self) {
        self.manifests.shrink_to_fit();
        self.refs.shrink_to_fit();
        for r in &mut self.refs {
            r.children.shrink_to_fit();
            r.blobs.shrink_to_fit();
        }
        self.blobs.shrink_to_fit();
        self.foreign.shrink_to_fit();
        self.platforms.shrink_to_fit();
        self.problems.shrink_to_fit();
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The top manifest (the tag's target), when it could be read.
    pub fn manifest(&self) -> Option<&ManifestRef> {
        self.manifests.last()
    }

    /// Bytes the image references: its configs and layers, each once.
    pub fn size(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }

    /// `repo:tag`, or `repo@digest` for an untagged manifest: the failed-list form (quoted when a
    /// name from a damaged tree holds a control character, see [`crate::names::list_line`]).
    pub fn reference(&self) -> String {
        ImageRef::line_of(&self.repository, self.tag.as_deref(), self.digest)
    }

    /// One line summing up the problems.
    pub fn problem_summary(&self) -> String {
        self.problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What to resolve besides tags.
#[derive(Debug, Clone, Copy, Default)]
pub struct InventoryOptions {
    /// Also resolve manifests no tag points at (and that no index lists).
    pub untagged: bool,
    /// Read single images' configs for their platform.
    pub config_platforms: bool,
}

/// Everything a run works on.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Selected images, sorted by repository then tag (untagged last in their repository).
    pub images: Vec<Image>,
    /// Repositories that were read.
    pub repositories: usize,
    /// Unfinished uploads found in the repositories that were read.
    pub uploads: Vec<Upload>,
    /// Problems that belong to no image (a repository with a bad name, an unreadable folder).
    pub problems: Vec<Problem>,
}

/// Totals for a summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub repositories: usize,
    pub tags: usize,
    pub untagged: usize,
    pub manifests: usize,
    pub broken: usize,
    pub logical_bytes: u64,
    pub unique_bytes: u64,
}

impl Inventory {
    /// Scans `source` and resolves every image `filters` selects.
    pub fn build(
        source: &dyn Source,
        filters: &Filters,
        options: InventoryOptions,
    ) -> Result<Inventory, SourceError> {
        let scan = source.repositories(
            ScanOptions {
                revisions: options.untagged,
            },
            &|name| filters.wants_repository(name),
        )?;
        let mut jobs: Vec<Job> = Vec::new();
        let mut inventory = Inventory {
            repositories: scan.repositories.len(),
            problems: scan.problems,
            ..Inventory::default()
        };
        // Only an --images list needs to know what was found (to name what was not).
        let listed = filters.image_list().is_some();
        let mut found: HashSet<ImageRef> = HashSet::new();
        for repo in &scan.repositories {
            inventory.uploads.extend(repo.uploads.iter().cloned());
            let jobs_before = jobs.len();
            for tag in &repo.tags {
                if filters.selects_tag(&repo.name, &tag.name) {
                    if listed {
                        found.insert(ImageRef::Tag {
                            repository: repo.name.clone(),
                            tag: tag.name.clone(),
                        });
                    }
                    jobs.push(Job {
                        repository: repo.name.clone(),
                        tag: Some(tag.name.clone()),
                        target: tag.target.clone(),
                        repository_problems: repo.problems.clone(),
                    });
                }
            }
            if options.untagged {
                for digest in untagged_in(source, repo) {
                    if filters.selects_untagged(&repo.name, &digest) {
                        if listed {
                            found.insert(ImageRef::Digest {
                                repository: repo.name.clone(),
                                digest,
                            });
                        }
                        jobs.push(Job {
                            repository: repo.name.clone(),
                            tag: None,
                            target: Ok(digest),
                            repository_problems: repo.problems.clone(),
                        });
                    }
                }
            }
            // A repository's own problems (a bad name) break each of its images; with no image
            // selected they are still reported.
            if jobs.len() == jobs_before {
                inventory.problems.extend(repo.problems.iter().cloned());
            }
        }
        drop(scan.repositories);
        let mut images: Vec<Image> = jobs
            .into_par_iter()
            .map(|job| {
                let mut image = resolve(
                    source,
                    &job.repository,
                    job.tag.as_deref(),
                    job.target,
                    options,
                );
                image.problems.splice(0..0, job.repository_problems);
                image
            })
            .collect();
        for wanted in filters.image_list().unwrap_or_default() {
            let selectable = match wanted {
                ImageRef::Tag { repository, tag } => filters.selects_tag(repository, tag),
                ImageRef::Digest { repository, digest } => {
                    filters.selects_untagged(repository, digest)
                }
            };
            if selectable && !found.contains(wanted) {
                let (tag, digest) = match wanted {
                    ImageRef::Tag { tag, .. } => (Some(tag.as_str()), None),
                    ImageRef::Digest { digest, .. } => (None, Some(*digest)),
                };
                let mut image = Image::new(wanted.repository(), tag, digest);
                image.problems.push(Problem::NotInSource);
                images.push(image);
                found.insert(wanted.clone());
            }
        }
        images.sort_by(|a, b| {
            (&a.repository, a.tag.is_none(), &a.tag, a.digest).cmp(&(
                &b.repository,
                b.tag.is_none(),
                &b.tag,
                b.digest,
            ))
        });
        inventory.images = images;
        Ok(inventory)
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            repositories: self.repositories,
            ..Totals::default()
        };
        let mut manifests = HashSet::new();
        let mut blobs: HashMap<Digest, u64> = HashMap::new();
        for image in &self.images {
            if image.tag.is_some() {
                t.tags += 1;
            } else {
                t.untagged += 1;
            }
            if !image.is_ok() {
                t.broken += 1;
            }
            manifests.extend(image.manifests.iter().map(|m| m.digest()));
            t.logical_bytes += image.size();
            for b in &image.blobs {
                blobs.insert(b.digest, b.size);
            }
        }
        t.manifests = manifests.len();
        t.unique_bytes = blobs.values().sum();
        t
    }
}

/// One tag (or untagged manifest) to resolve.
struct Job {
    repository: String,
    tag: Option<String>,
    target: Result<Digest, Problem>,
    repository_problems: Vec<Problem>,
}

/// Revisions of `repo` that no tag points at and that no manifest of the repository lists.
fn untagged_in(source: &dyn Source, repo: &crate::source::RepositoryEntry) -> Vec<Digest> {
    let tagged: HashSet<Digest> = repo
        .tags
        .iter()
        .filter_map(|t| t.target.as_ref().ok().copied())
        .collect();
    let revisions: Vec<Digest> = repo
        .revisions
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let listed: HashSet<Digest> = revisions
        .par_iter()
        .chain(tagged.par_iter())
        .filter_map(|d| source.manifest(d).ok())
        .flat_map_iter(|m| m.manifests().iter().map(|c| c.digest).collect::<Vec<_>>())
        .collect();
    revisions
        .into_iter()
        .filter(|d| !tagged.contains(d) && !listed.contains(d))
        .collect()
}

/// Resolves one tag's target into an image: reads manifests, stats blobs, records every problem.
pub fn resolve(
    source: &dyn Source,
    repository: &str,
    tag: Option<&str>,
    target: Result<Digest, Problem>,
    options: InventoryOptions,
) -> Image {
    let digest = match target {
        Ok(d) => d,
        Err(problem) => {
            let mut image = Image::new(repository, tag, None);
            image.problems.push(problem);
            return image;
        }
    };
    let mut image = Image::new(repository, tag, Some(digest));
    let top = match source.manifest(&digest) {
        Ok(m) => m,
        Err(p) => {
            image.problems.push(p);
            return image;
        }
    };
    let mut walk = Walk {
        source,
        blob_index: HashMap::new(),
        manifest_index: HashMap::new(),
        visiting: HashSet::new(),
        image: &mut image,
    };
    walk.manifest(&top, "", 0);
    if top.kind().is_index() {
        image.platforms = top
            .manifests()
            .iter()
            .filter_map(|c| c.platform.clone())
            .collect();
    } else if options.config_platforms
        && matches!(top.kind(), ManifestKind::Docker | ManifestKind::Oci)
        && let Some(config) = top.config()
        && let Ok(bytes) = source.small_blob(&config.digest, MAX_CONFIG_BYTES)
        && let Some(p) = config_platform(&bytes)
    {
        image.platforms.push(p);
    }
    image.shrink_to_fit();
    image
}

struct Walk<'a> {
    source: &'a dyn Source,
    /// Blob digest → index in `image.blobs` (`None`: the source lacks it; reported once).
    blob_index: HashMap<Digest, Option<usize>>,
    /// Manifest digest → index in `image.manifests`, once resolved.
    manifest_index: HashMap<Digest, usize>,
    /// Manifests being resolved (above the current one): a child among them is a loop.
    visiting: HashSet<Digest>,
    image: &'a mut Image,
}

impl Walk<'_> {
    /// Adds `manifest` and everything below it, returns its index; `context` prefixes problems
    /// found in children.
    fn manifest(&mut self, manifest: &RawManifest, context: &str, depth: usize) -> usize {
        let digest = manifest.digest();
        if let Some(&i) = self.manifest_index.get(&digest) {
            return i;
        }
        self.visiting.insert(digest);
        let mut refs = Refs::default();
        for (i, child) in manifest.manifests().iter().enumerate() {
            let label = match &child.platform {
                Some(p) => format!("{context}child {} ({p})", child.digest),
                None => format!("{context}child {} (entry {i})", child.digest),
            };
            if self.visiting.contains(&child.digest) {
                self.image.problems.push(Problem::Io {
                    path: self.source.location().to_path_buf(),
                    error: format!("{label}: refers back to an index that lists it (a loop)"),
                });
                continue;
            }
            if depth + 1 > MAX_INDEX_DEPTH {
                self.image.problems.push(Problem::Io {
                    path: self.source.location().to_path_buf(),
                    error: format!("{label}: indexes nest deeper than {MAX_INDEX_DEPTH} levels"),
                });
                continue;
            }
            match self.source.manifest(&child.digest) {
                Ok(m) => {
                    let c = self.manifest(&m, &format!("{label}: "), depth + 1);
                    refs.children.push(c);
                }
                Err(p) => self.image.problems.push(p.within(label)),
            }
        }
        let config = manifest.config().map(|c| (c, "config".to_string()));
        let layers = manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(i, l)| (l, format!("layer {}", i + 1)));
        for (descriptor, role) in config.into_iter().chain(layers) {
            let mut role = format!("{context}{role}");
            role.shrink_to_fit();
            let schema1 = manifest.kind() == ManifestKind::Schema1;
            if let Some(b) = self.blob(descriptor, role, schema1)
                && !refs.blobs.contains(&b)
            {
                refs.blobs.push(b);
            }
        }
        self.visiting.remove(&digest);
        self.image.manifests.push(ManifestRef::of(manifest));
        self.image.refs.push(refs);
        let i = self.image.manifests.len() - 1;
        self.manifest_index.insert(digest, i);
        i
    }

    /// Adds a config or layer once; its index in `image.blobs` when the source has it.
    fn blob(
        &mut self,
        descriptor: &Descriptor,
        role: String,
        size_from_file: bool,
    ) -> Option<usize> {
        if descriptor.is_foreign() {
            if !self
                .image
                .foreign
                .iter()
                .any(|f| f.digest == descriptor.digest)
            {
                self.image.foreign.push(descriptor.clone());
            }
            return None;
        }
        if let Some(&i) = self.blob_index.get(&descriptor.digest) {
            return i;
        }
        self.blob_index.insert(descriptor.digest, None);
        let file = match self.source.blob(&descriptor.digest) {
            Ok(f) => f,
            Err(Problem::MissingBlob { digest, path, .. }) => {
                self.image
                    .problems
                    .push(Problem::MissingBlob { role, digest, path });
                return None;
            }
            Err(p) => {
                self.image.problems.push(p.within(role));
                return None;
            }
        };
        if !size_from_file && file.len != descriptor.size {
            self.image.problems.push(Problem::BlobSize {
                role: role.clone(),
                digest: descriptor.digest,
                path: file.name(),
                expected: descriptor.size,
                found: file.len,
            });
        }
        self.image.blobs.push(BlobRef {
            digest: descriptor.digest,
            size: if size_from_file {
                file.len
            } else {
                descriptor.size
            },
            media_type: crate::manifest::media_type::intern(&descriptor.media_type),
            role,
        });
        let i = self.image.blobs.len() - 1;
        self.blob_index.insert(descriptor.digest, Some(i));
        Some(i)
    }
}
