//! Verifies a source by reading every byte the selected images need: a verdict per image with
//! every problem found, what hashing found blob by blob, and findings about the rest of the tree.

pub mod findings;
pub mod hash;
pub mod memo;
pub mod record;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::digest::Digest;
use crate::filter::{Filters, ImageRef};
use crate::inventory::{Image, Inventory, InventoryOptions};
use crate::manifest::{Descriptor, ManifestKind};
use crate::problem::Problem;
use crate::progress::Progress;
use crate::source::survey::Survey;
use crate::source::{BlobFile, Source, SourceError, Upload};
pub use findings::{Finding, FindingKind};
pub use hash::ReadStrategy;
use hash::{Hashed, hash_all};
use memo::{ManifestRead, Memo};
pub use record::{BlobIssue, BlobSummary, ImageVerdict, ProblemRecord, Status};

/// What a verification reads.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Also check manifests no tag points at, as `repo@digest` images.
    pub untagged: bool,
    /// Hash every stored blob, referenced or not (needs a survey).
    pub all_blobs: bool,
    /// Threads hashing at once.
    pub jobs: usize,
    pub read: ReadStrategy,
}

/// Everything a verification found.
#[derive(Debug, Serialize)]
pub struct Verification {
    pub images: Vec<ImageVerdict>,
    pub blobs: BlobSummary,
    pub findings: Vec<Finding>,
}

impl Verification {
    /// Whether every selected image is intact and nothing may hide one.
    pub fn all_intact(&self) -> bool {
        self.images.iter().all(|i| i.status == Status::Ok)
            && !self.findings.iter().any(|f| f.kind.is_problem())
    }

    /// Findings counted per kind, in kind order.
    pub fn finding_counts(&self) -> BTreeMap<FindingKind, usize> {
        let mut counts = BTreeMap::new();
        for f in &self.findings {
            *counts.entry(f.kind).or_default() += 1;
        }
        counts
    }
}

/// A verification resolved and ready to hash: what it will read is known.
pub struct Plan<'a> {
    memo: Memo<'a>,
    survey: Option<&'a Survey>,
    options: Options,
    images: Vec<Image>,
    /// Untagged revisions not selected: reported as findings, not read further.
    untagged_aside: Vec<Image>,
    uploads: Vec<Upload>,
    scan_problems: Vec<Problem>,
    /// Every digest a readable manifest of the tree references (with a survey).
    referenced: Option<HashSet<Digest>>,
    to_hash: Vec<(Digest, BlobFile)>,
    wanted: Box<dyn Fn(&str) -> bool + 'a>,
}

impl<'a> Plan<'a> {
    /// Resolves the images `filters` selects, reads every manifest of the tree once (for
    /// orphans, when a survey is given) and lists the blobs to hash.
    pub fn new(
        source: &'a dyn Source,
        survey: Option<&'a Survey>,
        filters: &'a Filters,
        options: Options,
    ) -> Result<Plan<'a>, SourceError> {
        let memo = Memo::new(source);
        let inventory = Inventory::build(
            &memo,
            filters,
            InventoryOptions {
                untagged: true,
                config_platforms: false,
            },
        )?;
        let named = |image: &Image| {
            image.digest.is_some_and(|digest| {
                filters.image_list().is_some_and(|list| {
                    list.contains(&ImageRef::Digest {
                        repository: image.repository.clone(),
                        digest,
                    })
                })
            })
        };
        let (images, untagged_aside): (Vec<Image>, Vec<Image>) = inventory
            .images
            .into_iter()
            .partition(|i| i.tag.is_some() || options.untagged || named(i));
        let referenced = survey.map(|s| referenced_in_tree(&memo, s, &images));

        let mut seen = HashSet::new();
        let mut to_hash = Vec::new();
        for blob in images.iter().flat_map(|i| &i.blobs) {
            if let Some(file) = &blob.file
                && seen.insert(blob.digest)
            {
                to_hash.push((blob.digest, file.clone()));
            }
        }
        if options.all_blobs
            && let Some(survey) = survey
        {
            for (digest, file) in &survey.blobs {
                let hashed_as_manifest = memo.get(digest).is_some_and(|r| was_hashed(&r));
                if !hashed_as_manifest && seen.insert(*digest) {
                    to_hash.push((*digest, file.clone()));
                }
            }
        }
        Ok(Plan {
            memo,
            survey,
            options,
            images,
            untagged_aside,
            uploads: inventory.uploads,
            scan_problems: inventory.problems,
            referenced,
            to_hash,
            wanted: Box::new(move |repo| filters.wants_repository(repo)),
        })
    }

    /// Images selected.
    pub fn images(&self) -> usize {
        self.images.len()
    }

    /// Blob files to hash and their bytes (manifests were read while planning).
    pub fn to_hash(&self) -> (usize, u64) {
        (
            self.to_hash.len(),
            self.to_hash.iter().map(|(_, f)| f.len).sum(),
        )
    }

    /// Hashes every listed blob once and gives each image its verdict.
    pub fn run(self, progress: &Progress) -> Verification {
        let top = self.memo.location().to_path_buf();
        let hashed = hash_all(
            self.to_hash.clone(),
            &top,
            self.options.jobs,
            self.options.read,
            progress,
        );
        let images = self
            .images
            .iter()
            .map(|image| self.verdict(image, &hashed))
            .collect();
        let blobs = self.blob_summary(&hashed);
        let findings = findings::collect(&findings::Sources {
            survey: self.survey,
            referenced: self.referenced.as_ref(),
            untagged: &self.untagged_aside,
            uploads: &self.uploads,
            scan_problems: &self.scan_problems,
            wanted: &*self.wanted,
        });
        Verification {
            images,
            blobs,
            findings,
        }
    }

    fn verdict(
        &self,
        image: &Image,
        hashed: &HashMap<Digest, Result<Hashed, Problem>>,
    ) -> ImageVerdict {
        let mut problems = image.problems.clone();
        problems.extend(self.child_sizes(image));
        for blob in &image.blobs {
            match hashed.get(&blob.digest) {
                Some(Ok(h)) if h.digest != blob.digest => problems.push(
                    Problem::CorruptBlob {
                        digest: blob.digest,
                        path: blob
                            .file
                            .as_ref()
                            .map(|f| f.path.clone())
                            .unwrap_or_default(),
                        found: h.digest,
                        len: h.len,
                    }
                    .within(&blob.role),
                ),
                Some(Err(Problem::MissingBlob { digest, path, .. })) => {
                    problems.push(Problem::MissingBlob {
                        role: blob.role.clone(),
                        digest: *digest,
                        path: path.clone(),
                    })
                }
                Some(Err(p)) => problems.push(p.clone().within(&blob.role)),
                Some(Ok(_)) | None => {}
            }
        }
        ImageVerdict {
            repository: image.repository.clone(),
            tag: image.tag.clone(),
            digest: image.digest,
            status: if problems.is_empty() {
                Status::Ok
            } else {
                Status::Broken
            },
            problems: problems.iter().map(ProblemRecord::from).collect(),
            notes: notes(image),
        }
    }

    /// Index children whose stored size differs from what their index says (a truncated child
    /// reads as corrupt too; this names the size the index expected).
    fn child_sizes(&self, image: &Image) -> Vec<Problem> {
        let mut out = Vec::new();
        for index in &image.manifests {
            for child in index.manifests() {
                let found = match self.memo.get(&child.digest) {
                    Some(Ok(m)) => m.len(),
                    Some(Err(Problem::CorruptManifest { len, .. })) => len,
                    _ => continue,
                };
                if found != child.size {
                    let path = self
                        .memo
                        .blob(&child.digest)
                        .map(|f| f.path)
                        .unwrap_or_default();
                    out.push(Problem::BlobSize {
                        role: child_label(child),
                        digest: child.digest,
                        path,
                        expected: child.size,
                        found,
                    });
                }
            }
        }
        out
    }

    /// The blobs the selected images need (and with `--all-blobs` every stored one), as hashed.
    fn blob_summary(&self, hashed: &HashMap<Digest, Result<Hashed, Problem>>) -> BlobSummary {
        let mut s = BlobSummary::default();
        let issue = |digest: Digest, path: PathBuf| BlobIssue {
            digest,
            path,
            actual_digest: None,
            bytes: None,
            error: None,
        };
        let mut manifests: HashSet<Digest> = HashSet::new();
        for image in &self.images {
            manifests.extend(image.digest);
            for m in &image.manifests {
                manifests.extend(m.manifests().iter().map(|c| c.digest));
            }
        }
        if self.options.all_blobs
            && let Some(survey) = self.survey
        {
            manifests.extend(
                survey
                    .blobs
                    .keys()
                    .filter(|d| self.memo.get(d).is_some_and(|r| was_hashed(&r))),
            );
        }
        for digest in manifests {
            let Some(read) = self.memo.get(&digest) else {
                continue;
            };
            match read.as_ref().map_err(innermost) {
                Ok(m) => (s.checked, s.bytes) = (s.checked + 1, s.bytes + m.len()),
                Err(Problem::CorruptManifest {
                    path, found, len, ..
                }) => {
                    (s.checked, s.bytes) = (s.checked + 1, s.bytes + len);
                    s.corrupt.push(BlobIssue {
                        actual_digest: Some(*found),
                        bytes: Some(*len),
                        ..issue(digest, path.clone())
                    });
                }
                Err(Problem::BadManifest { .. }) => {
                    let len = self.memo.blob(&digest).map(|f| f.len).unwrap_or(0);
                    (s.checked, s.bytes) = (s.checked + 1, s.bytes + len);
                }
                Err(Problem::MissingManifest { path, .. }) => {
                    s.missing.push(issue(digest, path.clone()))
                }
                Err(p) => s.unreadable.push(BlobIssue {
                    error: Some(p.to_string()),
                    ..issue(digest, problem_path(p))
                }),
            }
        }
        let files: HashMap<Digest, &Path> = self
            .to_hash
            .iter()
            .map(|(d, f)| (*d, f.path.as_path()))
            .collect();
        for (digest, outcome) in hashed {
            let path = files
                .get(digest)
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            match outcome {
                Ok(h) => {
                    (s.checked, s.bytes) = (s.checked + 1, s.bytes + h.len);
                    if h.digest != *digest {
                        s.corrupt.push(BlobIssue {
                            actual_digest: Some(h.digest),
                            bytes: Some(h.len),
                            ..issue(*digest, path)
                        });
                    }
                }
                Err(Problem::MissingBlob { .. }) => s.missing.push(issue(*digest, path)),
                Err(p) => s.unreadable.push(BlobIssue {
                    error: Some(p.to_string()),
                    ..issue(*digest, path)
                }),
            }
        }
        // Blobs the images need that were not there to hash.
        for p in self.images.iter().flat_map(|i| &i.problems) {
            if let Problem::MissingBlob { digest, path, .. } = innermost(p) {
                s.missing.push(issue(*digest, path.clone()));
            }
        }
        for list in [&mut s.corrupt, &mut s.missing, &mut s.unreadable] {
            list.sort();
            list.dedup_by(|a, b| a.digest == b.digest);
        }
        s
    }
}

/// Whether reading a manifest got as far as hashing its bytes.
fn was_hashed(read: &ManifestRead) -> bool {
    matches!(
        read,
        Ok(_) | Err(Problem::CorruptManifest { .. } | Problem::BadManifest { .. })
    )
}

/// The file a problem names.
fn problem_path(p: &Problem) -> PathBuf {
    match innermost(p) {
        Problem::BadLink { path, .. }
        | Problem::MissingLink { path }
        | Problem::MissingManifest { path, .. }
        | Problem::CorruptManifest { path, .. }
        | Problem::BadManifest { path, .. }
        | Problem::MissingBlob { path, .. }
        | Problem::BlobSize { path, .. }
        | Problem::CorruptBlob { path, .. }
        | Problem::Symlink { path }
        | Problem::Io { path, .. }
        | Problem::BadName { path, .. } => path.clone(),
        Problem::NotInSource | Problem::Within { .. } => PathBuf::new(),
    }
}

fn innermost(p: &Problem) -> &Problem {
    match p {
        Problem::Within { inner, .. } => innermost(inner),
        other => other,
    }
}

fn child_label(child: &Descriptor) -> String {
    match &child.platform {
        Some(p) => format!("child {} ({p})", child.digest),
        None => format!("child {}", child.digest),
    }
}

/// Facts about an image that are not problems.
fn notes(image: &Image) -> Vec<String> {
    let mut out = Vec::new();
    if image
        .manifests
        .iter()
        .any(|m| m.kind() == ManifestKind::Schema1)
    {
        out.push(
            "schema1 manifest: its digest depends on the repository name inside it, so push skips it (export keeps it)"
                .to_string(),
        );
    }
    for layer in &image.foreign {
        out.push(format!(
            "foreign layer {} is fetched from {} and need not be in the tree",
            layer.digest,
            layer.urls.first().map(String::as_str).unwrap_or("its URL")
        ));
    }
    out
}

/// Every digest the tree's readable manifests reference, manifests included: revisions and
/// tag histories of every repository, the selected images, and the children of indexes.
fn referenced_in_tree(memo: &Memo, survey: &Survey, images: &[Image]) -> HashSet<Digest> {
    let mut referenced: HashSet<Digest> = HashSet::new();
    let mut frontier: Vec<Digest> = survey
        .repositories
        .values()
        .flat_map(|r| r.manifests.iter().copied())
        .chain(images.iter().filter_map(|i| i.digest))
        .collect();
    for image in images {
        referenced.extend(image.blobs.iter().map(|b| b.digest));
    }
    while !frontier.is_empty() {
        frontier.retain(|d| referenced.insert(*d));
        let found: Vec<(Vec<Digest>, Vec<Digest>)> = frontier
            .par_iter()
            .filter_map(|d| memo.read(d).ok())
            .map(|m| {
                let blobs = m
                    .config()
                    .into_iter()
                    .chain(m.layers())
                    .map(|b| b.digest)
                    .collect();
                let children = m.manifests().iter().map(|c| c.digest).collect();
                (blobs, children)
            })
            .collect();
        frontier.clear();
        for (blobs, children) in found {
            referenced.extend(blobs);
            frontier.extend(children);
        }
    }
    referenced
}
